"""Applies one live event to every set the pointer names: idempotent (versions) and ordered
per aggregate (a missing predecessor is retried later on live sets)."""

from __future__ import annotations

import asyncio
import logging

from cqrs_shared.contracts.envelopes import EventEnvelope

from projector_service.application.apply import apply_events
from projector_service.application.ports import ViewSets, ViewStore

log = logging.getLogger(__name__)


class OutOfOrder(Exception):
    """An earlier version of the aggregate has not been applied yet (transient)."""


class WatermarkAdvancer:
    """Coalesces the watermark advances of concurrent handlers of one set: whoever asks while
    an advance runs shares the next one (which starts after its position was recorded). Under
    load one advance (three round trips) serves many events instead of each event paying it."""

    def __init__(self, store: ViewStore) -> None:
        self._store = store
        self._next: asyncio.Future[int] | None = None
        self._task: asyncio.Task[None] | None = None

    async def advance(self) -> int:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        fut = self._next
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await asyncio.shield(fut)

    async def _run(self) -> None:
        while self._next is not None:
            fut, self._next = self._next, None
            try:
                fut.set_result(await self._store.advance_watermark())
            except Exception as exc:  # every waiter fails (its handler retries the event)
                fut.set_exception(exc)
                fut.exception()  # retrieved: no "never retrieved" warning when no one waits


class Projector:
    def __init__(self, sets: ViewSets) -> None:
        self._sets = sets
        self._advancers: dict[str, WatermarkAdvancer] = {}

    async def handle(self, event: EventEnvelope) -> bool:
        """Returns True if the event changed a view, False for a duplicate. Raises OutOfOrder
        when an earlier version is still missing from a live set, InvalidEvent when the event
        can never be applied.

        Sets come newest first (a set being rebuilt, then the live one, then the retiring one),
        so that a newer set never lacks what an older one shows (see docs/architecture.md)."""
        changed = False
        for target in await self._sets.targets():
            result = await apply_events(target.store, [event])
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
            advancer = self._advancers.get(target.store.name)
            if advancer is None:
                advancer = self._advancers[target.store.name] = WatermarkAdvancer(target.store)
            await advancer.advance()
        return changed
