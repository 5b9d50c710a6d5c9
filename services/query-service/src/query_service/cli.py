from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, help="Query service: answers queries from the views.")


@app.callback()
def main() -> None:
    """Query service."""


@app.command()
def serve() -> None:
    """Answer queries until SIGTERM/SIGINT."""
    from cqrs_shared.runner import serve as run
    from query_service.config import QuerySettings
    from query_service.wiring import build

    run("query-service", QuerySettings(), build)
