"""Projection progress as Prometheus metrics: the watermark, the lag in events and in seconds,
and the commit-to-view delay of each event.

The projector maintains every view (orders, customers, products) in one pass under one
watermark, so the per-view series carry the same values today; the `view` label lets a view
that is built separately (a rebuild) report its own.

Lag is measured against what this projector has received: `lag_events` = highest received
position - watermark; `lag_seconds` = age (since its commit) of the oldest received event
above the watermark, 0 when caught up. An outbox that has not published yet shows in the
command service's cqrs_outbox_backlog instead.
"""

from __future__ import annotations

import heapq
import time
from datetime import datetime, timezone
from collections.abc import Awaitable, Callable
from typing import Any

from cqrs_shared import metrics

VIEWS = ("orders", "customers", "products")
MAX_PENDING = 100_000  # bound on remembered (position, commit time) pairs above the watermark


class ProjectionProgress:
    def __init__(self, views: tuple[str, ...] = VIEWS) -> None:
        self.views = views
        self.watermark = 0
        self.head = 0
        self._pending: list[tuple[int, float]] = []  # heap of (position, commit time as epoch s)
        for view in views:
            metrics.PROJECTION_LAG_SECONDS.labels(view).set_function(self.lag_seconds)

    def received(self, position: int, committed_at: datetime) -> None:
        self.head = max(self.head, position)
        if position > self.watermark:
            heapq.heappush(self._pending, (position, committed_at.timestamp()))
            if len(self._pending) > MAX_PENDING:  # a long-stuck watermark: keep the oldest
                self._pending = heapq.nsmallest(MAX_PENDING // 2, self._pending)
        self._publish()

    def applied(self, committed_at: datetime) -> None:
        delay = (datetime.now(timezone.utc) - committed_at).total_seconds()
        metrics.PROJECTION_DELAY_SECONDS.observe(max(delay, 0.0))

    def advanced(self, watermark: int) -> None:
        self.watermark = max(self.watermark, watermark)
        self.head = max(self.head, self.watermark)
        while self._pending and self._pending[0][0] <= self.watermark:
            heapq.heappop(self._pending)
        self._publish()

    def lag_events(self) -> int:
        return max(self.head - self.watermark, 0)

    def lag_seconds(self) -> float:
        if not self._pending:
            return 0.0
        return max(time.time() - self._pending[0][1], 0.0)

    def _publish(self) -> None:
        for view in self.views:
            metrics.PROJECTION_POSITION.labels(view).set(self.watermark)
            metrics.PROJECTION_LAG_EVENTS.labels(view).set(self.lag_events())


class ObservedViewStore:
    """The view store with its watermark reported to `progress` and, when given, to
    `announce(set name, watermark)` (the watermark notifications to the query services); every
    other call passes through unchanged. `when`: report only while it says so (the live set:
    while a rebuild runs, the projector also writes the set being built)."""

    def __init__(self, store: Any, progress: ProjectionProgress, when: Callable[[], bool] | None = None,
                 announce: Callable[[str, int], Awaitable[None]] | None = None) -> None:
        self._store = store
        self._progress = progress
        self._when = when
        self._announce = announce

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def advance_watermark(self) -> int:
        watermark = await self._store.advance_watermark()
        await self._advanced(watermark)
        return watermark

    async def extend_watermark(self, expected: int, upto: int) -> int | None:
        watermark = await self._store.extend_watermark(expected, upto)
        if watermark is not None:
            await self._advanced(watermark)
        return watermark

    async def _advanced(self, watermark: int) -> None:
        if self._when is None or self._when():
            self._progress.advanced(watermark)
            if self._announce is not None:
                await self._announce(self._store.name, watermark)
