"""`command-service serve | migrate`."""

from __future__ import annotations

import asyncio

import typer

from cqrs_shared import logs, tracing

from command_service.config import CommandSettings

app = typer.Typer(help="The command service of the CQRS order system.", no_args_is_help=True)


@app.command()
def serve() -> None:
    """Consume commands, run the outbox relay."""
    from command_service.wiring import App

    settings = CommandSettings()
    logs.configure("command-service", settings.instance, settings.log_level)
    tracing.configure("command-service", settings.instance)  # OTEL_TRACES_EXPORTER, off by default
    try:
        asyncio.run(App(settings).serve_until_signal())
    finally:
        tracing.shutdown()


@app.command()
def migrate(create_db: bool = typer.Option(True, help="Create the database if it is missing.")) -> None:
    """Apply the versioned database migrations (run once per deploy, e.g. as a Kubernetes Job)."""
    from command_service.adapters.postgres import apply_migrations, ensure_database

    settings = CommandSettings()
    if create_db:
        asyncio.run(ensure_database(settings.postgres_dsn))
    applied = apply_migrations(settings.postgres_dsn)
    typer.echo(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


if __name__ == "__main__":
    app()
