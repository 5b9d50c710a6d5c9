from __future__ import annotations

from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase

ORDERS = "orders"
STATE = "projector_state"
WATERMARK_ID = "watermark"


class MongoViewReader:
    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self._orders = db[ORDERS]
        self._state = db[STATE]

    async def get_order(self, order_id: str) -> dict[str, Any] | None:
        return await self._orders.find_one({"_id": order_id}, {"_id": 0})

    async def watermark(self) -> int:
        doc = await self._state.find_one({"_id": WATERMARK_ID})
        return int(doc["position"]) if doc and doc.get("position") is not None else 0
