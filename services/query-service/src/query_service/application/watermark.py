"""The views' watermark for queries: concurrent readers share one read, queries that wait for
a position share one poller, and the projectors' watermark notifications, while they arrive,
replace both the reads and the polling."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from cqrs_shared.topology import WATERMARK_FRESH_S

log = logging.getLogger(__name__)


class Notifications:
    """The highest watermark the projectors announced for each view set, and when the last
    announcement arrived. An announced watermark was written before it was announced, so the
    views hold at least that much; it may trail the stored one by a notification in flight,
    which only makes a query wait a little longer, never answer ahead of the views."""

    def __init__(self, fresh_s: float = WATERMARK_FRESH_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._fresh_s = fresh_s
        self._clock = clock
        self._sets: dict[str, tuple[int, float]] = {}

    def note(self, view_set: str, position: int) -> None:
        known = self._sets.get(view_set)
        self._sets[view_set] = (max(position, known[0]) if known else position, self._clock())

    def fresh(self, view_set: str) -> int | None:
        """The announced watermark of `view_set`, or None when no announcement for it arrived
        within the last `fresh_s` seconds (projectors down, broker away: read MongoDB)."""
        known = self._sets.get(view_set)
        if known is None or self._clock() - known[1] > self._fresh_s:
            return None
        return known[0]

    def arriving(self) -> bool:
        """True while announcements (for any set) keep arriving."""
        now = self._clock()
        return any(now - at <= self._fresh_s for _, at in self._sets.values())


class WatermarkWatcher:
    def __init__(self, read: Callable[[], Awaitable[int]], interval: float = 0.005,
                 notified: Callable[[], bool] = lambda: False, notified_interval: float = 0.1) -> None:
        """`read`: the watermark now. `interval`: how often waiters poll it; while `notified()`
        says notifications arrive (each one calls `poke`), only every `notified_interval`, as
        a safety net."""
        self._read = read
        self._interval = interval
        self._notified = notified
        self._notified_interval = notified_interval
        self._wake = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[int]]] = []
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[int] | None = None

    def poke(self) -> None:
        """A notification arrived: waiters check the watermark now."""
        if self._waiters:
            self._wake.set()

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
                self._wake.clear()
                interval = self._notified_interval if self._notified() else self._interval
                try:
                    await asyncio.wait_for(self._wake.wait(), interval)
                except asyncio.TimeoutError:
                    pass

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
