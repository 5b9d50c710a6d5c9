"""Applies one live event to every set the pointer names: idempotent (versions) and ordered
per aggregate (on live sets an event whose predecessor is missing waits briefly for it, then
is retried later). Concurrent handlers share their MongoDB round trips (ApplyBatcher,
ProgressRecorder); see docs/architecture.md, "Per-aggregate order with several projector
replicas"."""

from __future__ import annotations

import asyncio
import logging

from cqrs_shared.contracts.envelopes import EventEnvelope

from projector_service.application.apply import Applied, apply_events
from projector_service.application.ports import Target, ViewSets, ViewStore
from projector_service.domain.orders import ORDER_EVENTS

log = logging.getLogger(__name__)


class OutOfOrder(Exception):
    """An earlier version of the aggregate has not been applied yet (transient)."""


# How long an event whose predecessor is missing waits in the process before it goes to the
# retry queue. With several replicas the predecessor is nearly always held by another replica
# at that moment: it lands within the time an event spends in flight (milliseconds when the
# queue is short; under a backlog up to prefetch x replicas / throughput, about a second with
# 4 replicas here). The retry queue costs more (200 ms, then the back of the main queue behind
# the whole backlog) and holds the watermark for all of it. Bounded, because the waiting message
# holds a prefetch slot and every later event of its aggregate in this process.
OUT_OF_ORDER_WAIT_S = 2.0
FIRST_POLL_S = 0.005  # the view is read again after 5, 10, 20, 40, 80, 100, 100, ... ms
MAX_POLL_S = 0.1


class ProgressRecorder:
    """Records the processed positions of the concurrent handlers of one set together: one
    `processed` insert for all of them, then one watermark advance (four round trips). Whoever
    asks while a round runs joins the next one, which starts after that caller's view write,
    so the watermark it gets back covers its own position when that is contiguous.

    When a round's positions continue the watermark this recorder last saw without a gap (one
    replica, events in order: the usual case), they are recorded by a compare-and-set of the
    watermark instead, plus the scan for positions others recorded (two round trips, no
    `processed` documents); if another writer moved the watermark in between, the round falls
    back to the above."""

    def __init__(self, store: ViewStore) -> None:
        self._store = store
        self._known: int | None = None  # the watermark as this recorder last saw it
        self._positions: list[int] = []
        self._next: asyncio.Future[int] | None = None
        self._task: asyncio.Task[None] | None = None

    async def record(self, positions: list[int]) -> int:
        """Marks `positions` processed and advances the watermark; returns the watermark."""
        self._positions.extend(positions)
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        fut = self._next
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await asyncio.shield(fut)

    async def _run(self) -> None:
        while self._next is not None:
            fut, self._next = self._next, None
            positions, self._positions = sorted(set(self._positions)), []
            try:
                watermark = None
                known = self._known
                if known is not None and positions and positions == list(range(known + 1, known + 1 + len(positions))):
                    watermark = await self._store.extend_watermark(known, positions[-1])
                if watermark is None:
                    # the documents before the advance, which must find them (another replica's
                    # advance may be the one that moves the watermark over them)
                    await self._store.mark_processed(positions)
                    watermark = await self._store.advance_watermark()
                self._known = watermark
                fut.set_result(watermark)
            except Exception as exc:  # every waiter fails (its handler retries the event)
                self._known = None
                fut.set_exception(exc)
                fut.exception()  # retrieved: no "never retrieved" warning when no one waits


class ApplyBatcher:
    """Applies the events that the concurrent handlers of one set bring together: while one
    batch is being written, the events that arrive wait and go in the next one. A batch costs
    what one event costs (one read of the orders it touches, one bulk write, one write of the
    reference views), so under load the round trips are shared; alone, an event goes at once.
    Events of one aggregate never share a batch by accident of timing: a process handles them
    one after the other (the consumer's key), and apply_events folds them in version order
    anyway."""

    def __init__(self, store: ViewStore) -> None:
        self._store = store
        self._pending: list[tuple[EventEnvelope, asyncio.Future[Applied]]] = []
        self._task: asyncio.Task[None] | None = None

    async def apply(self, event: EventEnvelope) -> Applied:
        """The outcome for this event alone (`done`, `blocked` or `invalid` holds it)."""
        fut: asyncio.Future[Applied] = asyncio.get_running_loop().create_future()
        self._pending.append((event, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await asyncio.shield(fut)

    async def _run(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                result = await apply_events(self._store, [e for e, _ in batch], mark=False)
            except Exception as exc:  # every event of the batch fails (its handler retries it)
                for _, fut in batch:
                    fut.set_exception(exc)
                    fut.exception()
                continue
            done = {e.eventId for e in result.done}
            blocked = {e.eventId for e in result.blocked}
            invalid = {e.eventId: exc for e, exc in result.invalid}
            for event, fut in batch:
                one = Applied()
                if event.eventId in invalid:
                    one.invalid.append((event, invalid[event.eventId]))
                elif event.eventId in blocked:
                    one.blocked.append(event)
                elif event.eventId in done:
                    one.done.append(event)
                    one.changed = (event.aggregateId in result.written
                                   if event.eventType in ORDER_EVENTS else result.changed)
                fut.set_result(one)


class Projector:
    def __init__(self, sets: ViewSets, *, out_of_order_wait_s: float = OUT_OF_ORDER_WAIT_S) -> None:
        self._sets = sets
        self._wait_s = out_of_order_wait_s
        self._recorders: dict[str, ProgressRecorder] = {}
        self._batchers: dict[str, ApplyBatcher] = {}

    async def handle(self, event: EventEnvelope) -> bool:
        """Returns True if the event changed a view, False for a duplicate. Raises OutOfOrder
        when an earlier version is still missing from a live set after a short wait,
        InvalidEvent when the event can never be applied.

        Sets come newest first (a set being rebuilt, then the live one, then the retiring one),
        so that a newer set never lacks what an older one shows (see docs/architecture.md)."""
        changed = False
        for target in await self._sets.targets():
            result = await self._apply(target, event)
            if result.invalid:
                raise result.invalid[0][1]
            if result.blocked:
                if target.strict:
                    raise OutOfOrder(f"{event.aggregateId}: v{event.version} of {event.eventType} "
                                     f"waits for an earlier version (set {target.store.name or 'default'})")
                log.debug("set %s lacks an earlier version of %s; the rebuild replays it",
                          target.store.name, event.aggregateId)
                continue
            changed = changed or result.changed
            recorder = self._recorders.get(target.store.name)
            if recorder is None:
                recorder = self._recorders[target.store.name] = ProgressRecorder(target.store)
            await recorder.record([e.position for e in result.done])
        return changed

    async def _apply(self, target: Target, event: EventEnvelope) -> Applied:
        """Applies the event; on a strict set, an event whose predecessor is missing is tried
        again after short, growing sleeps (5, 10, 20, ... ms, at most 100 ms) for up to
        `out_of_order_wait_s`: the predecessor is usually with another replica right now."""
        batcher = self._batchers.get(target.store.name)
        if batcher is None:
            batcher = self._batchers[target.store.name] = ApplyBatcher(target.store)
        result = await batcher.apply(event)
        if not (result.blocked and target.strict) or self._wait_s <= 0:
            return result
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        pause = FIRST_POLL_S
        while result.blocked and (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, MAX_POLL_S)
            result = await batcher.apply(event)
        if not result.blocked:
            log.debug("%s v%d applied after waiting for its predecessor", event.aggregateId, event.version)
        return result
