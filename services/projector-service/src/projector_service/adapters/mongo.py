"""View store on MongoDB (motor). Works with the nx-27017 stand-in: whole documents are
read, recomputed and written back under a version guard (no $push, no positional $)."""

from __future__ import annotations

from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo.errors import DuplicateKeyError

ORDERS = "orders"
CUSTOMERS = "customers"
PRODUCTS = "products"
PROCESSED = "processed"
STATE = "projector_state"
WATERMARK_ID = "watermark"
SCAN_BATCH = 1000


async def ensure_indexes(db: AsyncIOMotorDatabase) -> None:
    # _id indexes cover GetOrderDetails, `processed` and the watermark
    await db[ORDERS].create_index("placedAt")
    await db[ORDERS].create_index([("customerId", 1), ("placedAt", -1), ("id", 1)])
    await db[ORDERS].create_index([("placedAt", -1), ("id", 1)])
    await db[ORDERS].create_index([("status", 1), ("placedAt", -1), ("id", 1)])
    await db[ORDERS].create_index("totalCents")
    # customers and products are read by _id only


class MongoViewStore:
    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self._orders = db[ORDERS]
        self._customers = db[CUSTOMERS]
        self._products = db[PRODUCTS]
        self._processed = db[PROCESSED]
        self._state = db[STATE]

    async def get_order(self, order_id: str) -> dict[str, Any] | None:
        doc = await self._orders.find_one({"_id": order_id})
        if doc is not None:
            doc.pop("_id", None)
        return doc

    async def insert_order(self, view: dict[str, Any]) -> bool:
        try:
            await self._orders.insert_one({"_id": view["id"], **view})
        except DuplicateKeyError:
            return False
        return True

    async def replace_order(self, view: dict[str, Any], expected_version: int) -> bool:
        res = await self._orders.replace_one(
            {"_id": view["id"], "version": expected_version}, {"_id": view["id"], **view}
        )
        return res.matched_count == 1

    async def _ensure_product(self, product_id: str) -> None:
        try:
            await self._products.insert_one({"_id": product_id, "productId": product_id,
                                             "name": None, "price": None, "version": 0,
                                             "stock": 0, "stockPosition": 0})
        except DuplicateKeyError:
            pass

    async def set_product_info(self, product_id: str, fields: dict[str, Any], version: int) -> None:
        await self._ensure_product(product_id)
        if fields:
            await self._products.update_one({"_id": product_id}, {"$set": fields})
        await self._products.update_one({"_id": product_id}, {"$max": {"version": version}})

    async def set_product_stock(self, product_id: str, stock: int, position: int) -> None:
        """Keeps the stock carried by the highest position: exact and order-independent."""
        await self._ensure_product(product_id)
        await self._products.update_one(
            {"_id": product_id, "stockPosition": {"$lt": position}},
            {"$set": {"stock": stock, "stockPosition": position}})

    async def upsert_customer(self, customer_id: str, fields: dict[str, Any]) -> None:
        await self._customers.update_one({"_id": customer_id}, {"$set": fields}, upsert=True)

    async def mark_processed(self, position: int) -> None:
        try:
            await self._processed.insert_one({"_id": position})
        except DuplicateKeyError:
            pass

    async def advance_watermark(self) -> int:
        """Moves the watermark over the contiguous processed positions. Safe with several
        replicas: every replica only ever raises it ($max) to a position whose predecessors
        are all processed."""
        doc = await self._state.find_one({"_id": WATERMARK_ID})
        start = w = int(doc["position"]) if doc and doc.get("position") is not None else 0
        while True:
            cursor = self._processed.find({"_id": {"$gt": w}}).sort("_id", 1).limit(SCAN_BATCH)
            seen = 0
            async for rec in cursor:
                if rec["_id"] != w + 1:
                    break
                w += 1
                seen += 1
            else:
                if seen == SCAN_BATCH:
                    continue
            break
        if w > start:
            await self._state.update_one({"_id": WATERMARK_ID}, {"$max": {"position": w}}, upsert=True)
        return w


def connect_mongo(url: str) -> Any:
    """The MongoDB client (the composition root imports no driver itself)."""
    from motor.motor_asyncio import AsyncIOMotorClient

    return AsyncIOMotorClient(url)


async def mongo_ready(client: Any) -> bool:
    """Readiness: the MongoDB server answers a ping."""
    await client.admin.command("ping")
    return True
