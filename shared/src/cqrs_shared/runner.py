"""The `serve` loop every service shares: JSON logs, build the service, log "<name> ready",
wait for SIGTERM/SIGINT, stop it (stop taking messages, finish and acknowledge what is held)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from cqrs_shared import logs, tracing
from cqrs_shared.settings import CommonSettings


class Stoppable(Protocol):
    async def stop(self) -> None: ...


def serve(name: str, settings: CommonSettings, build: Callable[[Any], Awaitable[Stoppable]]) -> None:
    logs.configure(name, settings.instance, settings.log_level)
    tracing.configure(name, settings.instance)  # OTEL_TRACES_EXPORTER, off by default
    log = logging.getLogger(name)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        service = await build(settings)
        log.info("%s ready (instance %s)", name, settings.instance)
        await stop.wait()
        log.info("%s stopping", name)
        await service.stop()
        tracing.shutdown()

    asyncio.run(run())
