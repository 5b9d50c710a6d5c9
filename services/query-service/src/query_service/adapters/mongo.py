from __future__ import annotations

from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase

ORDERS = "orders"
CUSTOMERS = "customers"
PRODUCTS = "products"
STATE = "projector_state"
WATERMARK_ID = "watermark"
NEWEST_FIRST = [("placedAt", -1), ("id", 1)]


class MongoViewReader:
    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self._orders = db[ORDERS]
        self._customers = db[CUSTOMERS]
        self._products = db[PRODUCTS]
        self._state = db[STATE]

    async def get_order(self, order_id: str) -> dict[str, Any] | None:
        return await self._orders.find_one({"_id": order_id}, {"_id": 0})

    async def page_orders(self, flt: dict[str, Any], skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        total = await self._orders.count_documents(flt)
        cursor = self._orders.find(flt).sort(NEWEST_FIRST).skip(skip).limit(limit)
        return [doc async for doc in cursor], total

    async def all_orders(self, flt: dict[str, Any]) -> list[dict[str, Any]]:
        return [doc async for doc in self._orders.find(flt)]

    async def get_customer(self, customer_id: str) -> dict[str, Any] | None:
        return await self._customers.find_one({"_id": customer_id})

    async def get_product(self, product_id: str) -> dict[str, Any] | None:
        return await self._products.find_one({"_id": product_id})

    async def watermark(self) -> int:
        doc = await self._state.find_one({"_id": WATERMARK_ID})
        return int(doc["position"]) if doc and doc.get("position") is not None else 0


def connect_mongo(url: str) -> Any:
    """The MongoDB client (the composition root imports no driver itself)."""
    from motor.motor_asyncio import AsyncIOMotorClient

    return AsyncIOMotorClient(url)


async def mongo_ready(client: Any) -> bool:
    """Readiness: the MongoDB server answers a ping."""
    await client.admin.command("ping")
    return True
