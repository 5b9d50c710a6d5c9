"""View sets on MongoDB (motor). Works with the nx-27017 stand-in: whole documents are read,
recomputed and written back under a version guard (no $push, no positional $), and collections
are never renamed (a rebuild writes a new set and moves a pointer instead)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from motor.motor_asyncio import AsyncIOMotorDatabase
from pymongo import InsertOne, ReplaceOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from cqrs_shared.viewsets import (
    POINTER_ID, POINTER_TTL_S, STATE, collection, set_of_collection, watermark_id,
)

from projector_service.application.ports import Pointer, Target

SCAN_BATCH = 5000
DUPLICATE_KEY = 11000
NEW_PRODUCT = {"name": None, "price": None, "stock": 0, "stockPosition": 0}


async def ensure_indexes(db: AsyncIOMotorDatabase, view_set: str = "") -> None:
    # _id indexes cover GetOrderDetails, customers, products, `processed` and the watermark
    orders = db[collection("orders", view_set)]
    await orders.create_index("placedAt")
    await orders.create_index([("customerId", 1), ("placedAt", -1), ("id", 1)])
    await orders.create_index([("placedAt", -1), ("id", 1)])
    await orders.create_index([("status", 1), ("placedAt", -1), ("id", 1)])
    await orders.create_index("totalCents")


def _only_duplicates(exc: BulkWriteError) -> list[int]:
    """Indexes of the operations that hit an existing _id; re-raises any other error."""
    errors = exc.details.get("writeErrors", [])
    if exc.details.get("writeConcernErrors") or any(e.get("code") != DUPLICATE_KEY for e in errors):
        raise exc
    return [e["index"] for e in errors]


async def _bulk_upserts(coll: Any, ops: list[Any]) -> None:
    """Unordered bulk of upserts. Two writers upserting the same new _id at once make one of
    them fail with a duplicate key: the document exists then, so that operation is rerun."""
    for _ in range(3):
        try:
            await coll.bulk_write(ops, ordered=False)
            return
        except BulkWriteError as exc:
            ops = [ops[i] for i in _only_duplicates(exc)]
    await coll.bulk_write(ops, ordered=False)


class MongoViewStore:
    """One collection set (see cqrs_shared.viewsets for the names)."""

    def __init__(self, db: AsyncIOMotorDatabase, name: str = "") -> None:
        self.name = name
        self._orders = db[collection("orders", name)]
        self._customers = db[collection("customers", name)]
        self._products = db[collection("products", name)]
        self._processed = db[collection("processed", name)]
        self._state = db[STATE]
        self._watermark_id = watermark_id(name)

    async def get_orders(self, order_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(order_ids)
        if not ids:
            return {}
        flt = {"_id": ids[0]} if len(ids) == 1 else {"_id": {"$in": ids}}
        out = {}
        async for doc in self._orders.find(flt):
            out[doc.pop("_id")] = doc
        return out

    async def write_orders(self, writes: Sequence[tuple[dict[str, Any], int]]) -> set[str]:
        if not writes:
            return set()
        ops: list[Any] = [InsertOne({"_id": doc["id"], **doc}) if expected == 0
                          else ReplaceOne({"_id": doc["id"], "version": expected}, {"_id": doc["id"], **doc})
                          for doc, expected in writes]
        lost: set[str] = set()
        try:
            res = await self._orders.bulk_write(ops, ordered=False)
            matched = res.matched_count
        except BulkWriteError as exc:
            lost |= {writes[i][0]["id"] for i in _only_duplicates(exc)}
            matched = exc.details.get("nMatched", 0)
        replaces = [(doc, expected) for doc, expected in writes if expected != 0]
        if matched < len(replaces):
            # some guard did not match: another writer moved the document; find which
            stored = await self.get_orders(doc["id"] for doc, _ in replaces)
            lost |= {doc["id"] for doc, _ in replaces
                     if stored.get(doc["id"], {}).get("version") != doc["version"]}
        return lost

    async def write_references(self, customers: dict[str, dict[str, Any]],
                               product_info: dict[str, tuple[dict[str, Any], int]],
                               product_stock: dict[str, tuple[int, int]]) -> None:
        if customers:
            await _bulk_upserts(self._customers, [UpdateOne({"_id": cid}, {"$set": fields}, upsert=True)
                                                  for cid, fields in customers.items()])
        products = sorted(set(product_info) | set(product_stock))
        if not products:
            return
        # create missing products first (a stock can arrive before ProductAdded), then update
        await _bulk_upserts(self._products, [
            UpdateOne({"_id": p}, {"$setOnInsert": {"productId": p, "version": 0, **NEW_PRODUCT}}, upsert=True)
            for p in products])
        ops: list[Any] = []
        for p, (fields, version) in product_info.items():
            update: dict[str, Any] = {"$max": {"version": version}}
            if fields:
                update["$set"] = fields
            ops.append(UpdateOne({"_id": p}, update))
        for p, (stock, position) in product_stock.items():
            # keeps the stock carried by the highest position: exact in any delivery order
            ops.append(UpdateOne({"_id": p, "stockPosition": {"$lt": position}},
                                 {"$set": {"stock": stock, "stockPosition": position}}))
        await self._products.bulk_write(ops, ordered=False)

    async def mark_processed(self, positions: Sequence[int]) -> None:
        if not positions:
            return
        try:
            await self._processed.insert_many([{"_id": p} for p in positions], ordered=False)
        except BulkWriteError as exc:
            _only_duplicates(exc)

    async def watermark(self) -> int:
        doc = await self._state.find_one({"_id": self._watermark_id})
        return int(doc["position"]) if doc and doc.get("position") is not None else 0

    async def advance_watermark(self) -> int:
        """Moves the watermark over the contiguous processed positions. Safe with several
        writers: each only ever raises it ($max) to a position whose predecessors are all
        processed."""
        return await self.record_processed(())

    async def record_processed(self, positions: Sequence[int]) -> int:
        """Positions up to the watermark need no `processed` document: the watermark says they
        are processed. So the positions given here that are contiguous with the watermark
        (together with the stored ones) just raise it; only the others get a document."""
        start = await self.watermark()
        given = sorted({p for p in positions if p > start})
        w = await self._raise_over_processed(start, given)
        await self.mark_processed([p for p in given if p > w])
        return w

    async def extend_watermark(self, expected: int, upto: int) -> int | None:
        """Compare-and-set: raises the watermark from exactly `expected` to `upto` (the caller
        has applied every position in between), then over the processed positions others
        recorded above it, as advance_watermark does. None, with nothing written, when the
        watermark is not `expected`: the caller records its positions the usual way.

        Two round trips instead of four (mark, read, scan, raise), and no `processed`
        documents. Safe with several writers for the same reason mark-then-advance is: a
        writer marks its positions before it reads the watermark, so one that read it before
        this raise marked them before it too, and the scan after the raise finds them."""
        if upto <= expected:
            return None
        result = await self._state.update_one({"_id": self._watermark_id, "position": expected},
                                              {"$set": {"position": upto}})
        if result.matched_count != 1:
            return None
        return await self._raise_over_processed(upto, [])

    async def _raise_over_processed(self, start: int, given: Sequence[int]) -> int:
        """Raises the watermark from `start` (the stored value) over the contiguous positions
        among the stored `processed` documents and `given`; returns the new watermark."""
        w = start
        while True:
            stored = await self.processed_after(w, SCAN_BATCH)
            merged = sorted(set(stored) | {p for p in given if p > w})
            for p in merged:
                if p != w + 1:
                    break
                w = p
            else:
                if len(stored) == SCAN_BATCH:
                    continue
            break
        if w > start:
            await self._state.update_one({"_id": self._watermark_id}, {"$max": {"position": w}}, upsert=True)
        return w

    async def processed_after(self, position: int, limit: int | None, upto: int | None = None) -> list[int]:
        rng: dict[str, int] = {"$gt": position}
        if upto is not None:
            rng["$lte"] = upto
        cursor = self._processed.find({"_id": rng}).sort("_id", 1)
        if limit is not None:
            cursor = cursor.limit(limit)
        return [rec["_id"] async for rec in cursor]

    async def last_processed(self) -> int:
        docs = await self._processed.find({}).sort("_id", -1).limit(1).to_list(1)
        return int(docs[0]["_id"]) if docs else 0


def _pointer(doc: dict[str, Any] | None) -> Pointer:
    if not doc:
        return Pointer()

    def when(v: Any) -> datetime | None:
        if isinstance(v, datetime):
            return v if v.tzinfo else v.replace(tzinfo=timezone.utc)
        return None

    return Pointer(generation=int(doc.get("generation", 0)), live=doc.get("live", ""),
                   building=doc.get("building"), strict=bool(doc.get("strict")), owner=doc.get("owner"),
                   heartbeat_at=when(doc.get("heartbeatAt")), retiring=doc.get("retiring"),
                   retire_until=when(doc.get("retireUntil")), next_set=int(doc.get("nextSet", 1)))


def _pointer_doc(p: Pointer) -> dict[str, Any]:
    return {"_id": POINTER_ID, "generation": p.generation, "live": p.live, "building": p.building,
            "strict": p.strict, "owner": p.owner, "heartbeatAt": p.heartbeat_at, "retiring": p.retiring,
            "retireUntil": p.retire_until, "nextSet": p.next_set}


async def read_pointer(db: AsyncIOMotorDatabase) -> Pointer:
    return _pointer(await db[STATE].find_one({"_id": POINTER_ID}))


class MongoViewSets:
    """The targets of live events, from the pointer document read at most POINTER_TTL_S ago
    (one read per interval and process, shared by concurrent callers)."""

    def __init__(self, db: AsyncIOMotorDatabase, ttl: float = POINTER_TTL_S,
                 wrap: Callable[[MongoViewStore], Any] | None = None) -> None:
        self._db = db
        self._ttl = ttl
        self._wrap = wrap  # e.g. a store that reports its watermark to the metrics
        self._stores: dict[str, Any] = {}
        self.live_name = ""  # the live set, as of the last pointer read
        self._targets: list[Target] | None = None
        self._read_at = 0.0
        self._refresh: asyncio.Future[list[Target]] | None = None

    def store(self, name: str) -> Any:
        if name not in self._stores:
            store = MongoViewStore(self._db, name)
            self._stores[name] = self._wrap(store) if self._wrap else store
        return self._stores[name]

    async def targets(self) -> list[Target]:
        if self._targets is not None and time.monotonic() - self._read_at < self._ttl:
            return self._targets
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._read())
        return await asyncio.shield(self._refresh)

    async def _read(self) -> list[Target]:
        started = time.monotonic()
        pointer = await read_pointer(self._db)
        self.live_name = pointer.live
        self._targets = [Target(self.store(name), strict)
                         for name, strict in pointer.target_names(datetime.now(timezone.utc))]
        self._read_at = started  # the age counts from before the read
        return self._targets


class MongoSetRegistry:
    """The pointer document and the sets, for the rebuild."""

    def __init__(self, db: AsyncIOMotorDatabase) -> None:
        self._db = db
        self._state = db[STATE]

    async def read(self) -> Pointer:
        return await read_pointer(self._db)

    async def replace(self, new: Pointer, expected_generation: int) -> bool:
        doc = _pointer_doc(new)
        if expected_generation == 0:
            try:
                await self._state.insert_one(doc)
            except DuplicateKeyError:
                return False
            return True
        res = await self._state.replace_one({"_id": POINTER_ID, "generation": expected_generation}, doc)
        return res.matched_count == 1

    async def heartbeat(self, building: str, owner: str, at: datetime) -> bool:
        res = await self._state.update_one({"_id": POINTER_ID, "building": building, "owner": owner},
                                           {"$set": {"heartbeatAt": at}})
        return res.matched_count == 1

    def store(self, name: str) -> MongoViewStore:
        return MongoViewStore(self._db, name)

    async def create_indexes(self, name: str) -> None:
        await ensure_indexes(self._db, name)

    async def drop_except(self, keep: set[str]) -> list[str]:
        dropped: set[str] = set()
        for coll in await self._db.list_collection_names():
            owner = set_of_collection(coll)
            if owner is not None and owner not in keep:
                await self._db.drop_collection(coll)
                dropped.add(owner)
        for name in dropped:
            await self._state.delete_one({"_id": watermark_id(name)})
        return sorted(dropped)


def connect_mongo(url: str) -> Any:
    """The MongoDB client (the composition root imports no driver itself)."""
    from motor.motor_asyncio import AsyncIOMotorClient

    return AsyncIOMotorClient(url, tz_aware=True)


async def mongo_ready(client: Any) -> bool:
    """Readiness: the MongoDB server answers a ping."""
    await client.admin.command("ping")
    return True
