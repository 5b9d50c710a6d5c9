from __future__ import annotations

import sys

import typer

app = typer.Typer(add_completion=False, help="Projector service: events -> read views.")

VIEWS = ("all",)


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


@app.command()
def rebuild(
    view: str = typer.Argument("all", help="Which views to rebuild. Only `all`: the views share "
                                           "one watermark, so they are rebuilt together."),
    grace: float = typer.Option(None, help="Seconds the previous set is still written after the "
                                           "switch (default REBUILD_GRACE_SECONDS, 30)."),
) -> None:
    """Replay the whole history into a fresh set of views while queries keep using the live
    one, then switch atomically. Runs beside the running services; exits 0 once switched."""
    import asyncio
    import logging

    from cqrs_shared import logs
    from projector_service.application.rebuild import RebuildRefused
    from projector_service.config import ProjectorSettings
    from projector_service.wiring import rebuild as run_rebuild

    if view not in VIEWS:
        raise typer.BadParameter(f"{view!r}: only `all` can be rebuilt (the views share one watermark "
                                 f"and are switched together; see docs/operations.md)", param_hint="VIEW")
    settings = ProjectorSettings()
    if grace is not None:
        if grace < 0:
            raise typer.BadParameter("must be >= 0", param_hint="--grace")
        settings.rebuild_grace_seconds = grace
    logs.configure("projector-service", settings.instance, settings.log_level)
    reporter = ProgressReporter()
    try:
        result = asyncio.run(run_rebuild(settings, reporter))
    except RebuildRefused as exc:
        reporter.close()
        typer.echo(f"rebuild refused: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        reporter.close()
        typer.echo("rebuild interrupted: the live views are unchanged; run it again", err=True)
        raise typer.Exit(130) from None
    reporter.close()
    logging.getLogger("projector-service").info("rebuild done")
    typer.echo(f"switched: set {result.view_set or 'default'} is live (was {result.previous or 'default'}); "
               f"{result.applied} events applied in {result.elapsed:.1f} s ({result.rate:,.0f} events/s), "
               f"watermark {result.watermark}"
               + (f"; dropped old sets {', '.join(d or 'default' for d in result.dropped)}" if result.dropped else ""))


class ProgressReporter:
    """A progress bar on a terminal, else one line per report (logs of a Kubernetes Job)."""

    def __init__(self) -> None:
        from rich.console import Console

        self._console = Console(stderr=True)
        self._bar = None
        self._task = None
        if self._console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]:>8,.0f} events/s"), TimeElapsedColumn(),
                                 console=self._console)
            self._bar.start()

    def __call__(self, p) -> None:  # p: projector_service.application.rebuild.Progress
        total = max(p.target, p.watermark, 1)
        if self._bar is not None:
            desc = f"set {p.view_set} {p.phase}"
            if self._task is None:
                self._task = self._bar.add_task(desc, total=total, rate=p.rate)
            self._bar.update(self._task, description=desc, completed=min(p.watermark, total), total=total,
                             rate=p.rate)
        else:
            print(f"rebuild set {p.view_set} [{p.phase}] watermark {p.watermark}/{total} "
                  f"({100 * min(p.watermark, total) / total:.0f}%), {p.applied} events applied, "
                  f"{p.rate:,.0f} events/s, {p.elapsed:.1f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
