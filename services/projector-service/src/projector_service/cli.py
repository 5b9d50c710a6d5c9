from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, help="Projector service: events -> read views.")


@app.callback()
def main() -> None:
    """Projector service."""


@app.command()
def serve() -> None:
    """Consume events and maintain the views until SIGTERM/SIGINT."""
    from cqrs_shared.runner import serve as run
    from projector_service.config import ProjectorSettings
    from projector_service.wiring import build

    run("projector-service", ProjectorSettings(), build)
