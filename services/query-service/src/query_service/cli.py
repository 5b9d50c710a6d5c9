from __future__ import annotations

import asyncio
import logging
import signal

import typer

app = typer.Typer(add_completion=False, help="Query service: answers queries from the views.")


@app.callback()
def main() -> None:
    """Query service."""


@app.command()
def serve() -> None:
    """Answer queries until SIGTERM/SIGINT."""
    from query_service.config import QuerySettings
    from query_service.wiring import build

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        service = await build(QuerySettings())
        logging.info("query-service ready")
        await stop.wait()
        logging.info("query-service stopping")
        await service.stop()

    asyncio.run(run())
