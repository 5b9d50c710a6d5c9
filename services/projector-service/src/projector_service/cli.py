from __future__ import annotations

import asyncio
import logging
import signal

import typer

app = typer.Typer(add_completion=False, help="Projector service: events -> read views.")


@app.callback()
def main() -> None:
    """Projector service."""


@app.command()
def serve() -> None:
    """Consume events and maintain the views until SIGTERM/SIGINT."""
    from projector_service.config import ProjectorSettings
    from projector_service.wiring import build

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        service = await build(ProjectorSettings())
        logging.info("projector-service ready")
        await stop.wait()
        logging.info("projector-service stopping")
        await service.stop()

    asyncio.run(run())
