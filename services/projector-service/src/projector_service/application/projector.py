"""Applies one live event to every set the pointer names: idempotent (versions) and ordered
per aggregate (a missing predecessor is retried later on live sets)."""

from __future__ import annotations

import logging

from cqrs_shared.contracts.envelopes import EventEnvelope

from projector_service.application.apply import apply_events
from projector_service.application.ports import ViewSets

log = logging.getLogger(__name__)


class OutOfOrder(Exception):
    """An earlier version of the aggregate has not been applied yet (transient)."""


class Projector:
    def __init__(self, sets: ViewSets) -> None:
        self._sets = sets

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
            await target.store.advance_watermark()
        return changed
