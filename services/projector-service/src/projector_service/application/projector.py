"""Applies one event: idempotent (versions) and ordered per aggregate (gaps are retried)."""

from __future__ import annotations

import logging

from cqrs_shared.contracts.envelopes import EventEnvelope

from projector_service.application.ports import ViewStore
from projector_service.domain.orders import ORDER_EVENTS, apply_order_event

log = logging.getLogger(__name__)


class OutOfOrder(Exception):
    """An earlier version of the aggregate has not been applied yet (transient)."""


class Projector:
    def __init__(self, store: ViewStore) -> None:
        self._store = store

    async def handle(self, event: EventEnvelope) -> bool:
        """Returns True if the event changed a view, False for a duplicate or an event no
        view uses. Raises OutOfOrder when an earlier version is still missing."""
        applied = False
        if event.eventType in ORDER_EVENTS:
            applied = await self._apply_order(event)
        await self._apply_reference(event)
        await self._store.mark_processed(event.position)
        await self._store.advance_watermark()
        return applied

    async def _apply_reference(self, event: EventEnvelope) -> None:
        """customers and products views; every write is idempotent and order-independent."""
        d = event.data
        t = event.eventType
        if t == "CustomerRegistered":
            await self._store.upsert_customer(event.aggregateId, {
                "customerId": event.aggregateId, "name": d.get("name"), "email": d.get("email")})
        elif t in ("ProductAdded", "ProductRestocked"):
            info = {"name": d.get("name"), "price": d.get("price")} if t == "ProductAdded" else {}
            await self._store.set_product_info(event.aggregateId, info, event.version)
            if isinstance(d.get("stock"), int):
                await self._store.set_product_stock(event.aggregateId, d["stock"], event.position)
        elif t in ("OrderPlaced", "OrderCancelled"):
            for item in d.get("items") or []:
                if isinstance(item, dict) and item.get("productId") and isinstance(item.get("stock"), int):
                    await self._store.set_product_stock(item["productId"], item["stock"], event.position)

    async def _apply_order(self, event: EventEnvelope) -> bool:
        current = await self._store.get_order(event.aggregateId)
        stored = current["version"] if current else 0
        if stored >= event.version:
            log.debug("duplicate %s v%s of %s", event.eventType, event.version, event.aggregateId)
            return False
        if stored < event.version - 1:
            raise OutOfOrder(f"{event.aggregateId}: have v{stored}, got v{event.version}")
        new = apply_order_event(current, event)
        assert new is not None
        ok = (await self._store.insert_order(new) if event.version == 1
              else await self._store.replace_order(new, event.version - 1))
        if ok:
            return True
        # another replica wrote meanwhile: fine if it wrote this version or a later one
        current = await self._store.get_order(event.aggregateId)
        if current is not None and current["version"] >= event.version:
            return False
        raise OutOfOrder(f"{event.aggregateId}: concurrent write, v{event.version} not applied")
