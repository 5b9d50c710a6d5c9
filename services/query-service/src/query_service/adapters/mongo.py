from __future__ import annotations

import asyncio
import time
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase

from query_service.application.watermark import Notifications
from cqrs_shared.viewsets import POINTER_ID, POINTER_TTL_S, STATE, collection, live_set, watermark_id

NEWEST_FIRST = [("placedAt", -1), ("id", 1)]


class MongoViewReader:
    """Reads the live collection set. Its name comes from the pointer document
    (`projector_state/views`, written by a rebuild), cached for POINTER_TTL_S: no query pays
    a round trip for it. A query that uses a pointer just switched away from still reads a
    complete set: the previous set is written for a grace period after the switch and dropped
    only by the next rebuild (docs/architecture.md, "Rebuilding the views")."""

    def __init__(self, db: AsyncIOMotorDatabase, pointer_ttl: float = POINTER_TTL_S,
                 notifications: Notifications | None = None) -> None:
        self._db = db
        self._notifications = notifications
        self._state = db[STATE]
        self._ttl = pointer_ttl
        self._set = ""
        self._read_at = float("-inf")
        self._refresh: asyncio.Future[str] | None = None

    async def _live(self) -> str:
        if time.monotonic() - self._read_at < self._ttl:
            return self._set
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._read_pointer())
        return await asyncio.shield(self._refresh)

    async def _read_pointer(self) -> str:
        started = time.monotonic()
        self._set = live_set(await self._state.find_one({"_id": POINTER_ID}))
        self._read_at = started
        return self._set

    async def _coll(self, base: str) -> Any:
        return self._db[collection(base, await self._live())]

    async def get_order(self, order_id: str) -> dict[str, Any] | None:
        return await (await self._coll("orders")).find_one({"_id": order_id}, {"_id": 0})

    async def page_orders(self, flt: dict[str, Any], skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        orders = await self._coll("orders")
        total = await orders.count_documents(flt)
        cursor = orders.find(flt).sort(NEWEST_FIRST).skip(skip).limit(limit)
        return [doc async for doc in cursor], total

    async def all_orders(self, flt: dict[str, Any]) -> list[dict[str, Any]]:
        return [doc async for doc in (await self._coll("orders")).find(flt)]

    async def get_customer(self, customer_id: str) -> dict[str, Any] | None:
        return await (await self._coll("customers")).find_one({"_id": customer_id})

    async def get_product(self, product_id: str) -> dict[str, Any] | None:
        return await (await self._coll("products")).find_one({"_id": product_id})

    async def watermark(self) -> int:
        """The live set's watermark: as announced by the projectors while their notifications
        arrive (no round trip), else the stored document."""
        live = await self._live()
        if self._notifications is not None:
            announced = self._notifications.fresh(live)
            if announced is not None:
                return announced
        doc = await self._state.find_one({"_id": watermark_id(live)})
        return int(doc["position"]) if doc and doc.get("position") is not None else 0


def connect_mongo(url: str) -> Any:
    """The MongoDB client (the composition root imports no driver itself)."""
    from motor.motor_asyncio import AsyncIOMotorClient

    return AsyncIOMotorClient(url)


async def mongo_ready(client: Any) -> bool:
    """Readiness: the MongoDB server answers a ping."""
    await client.admin.command("ping")
    return True
