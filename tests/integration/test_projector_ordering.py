"""Per-aggregate order when several projector processes consume at once: an event whose
predecessor is being applied elsewhere waits briefly in the process instead of going through
the retry queue; processed positions of concurrent handlers are recorded together. Real
MongoDB (nx-27017 stand-in or mongod); two Projector instances play two replicas."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from cqrs_shared.contracts.envelopes import EventEnvelope
from projector_service.adapters.mongo import MongoViewSets
from projector_service.application.projector import OutOfOrder, Projector

_positions = itertools.count(1)


@pytest.fixture(scope="module")
async def db(mongo_url, mongo_db_name):
    client = AsyncIOMotorClient(mongo_url)
    yield client[mongo_db_name]
    client.close()


def envelope(etype: str, agg: str, version: int, data: dict, *, atype: str = "order") -> EventEnvelope:
    return EventEnvelope.model_validate({
        "eventId": uuid.uuid4().hex, "eventType": etype, "aggregateId": agg, "aggregateType": atype,
        "version": version, "position": next(_positions), "timestamp": f"2026-11-22T10:30:0{version}.000Z",
        "correlationId": "corr", "causationId": "cmd", "schemaVersion": 1, "data": data,
        "metadata": {"userId": "user_1"}})


def order_placed(oid: str) -> EventEnvelope:
    return envelope("OrderPlaced", oid, 1, {
        "orderId": oid, "customerId": "c1", "customer": {"id": "c1", "name": "Ann", "email": "a@x.io"},
        "items": [{"productId": "p1", "name": "Pen", "quantity": 1, "unitPrice": "1.50", "lineTotal": "1.50",
                   "stock": 5}],
        "totalAmount": "1.50", "shippingAddress": {"street": "s", "city": "c", "state": "st", "zip": "z"}})


def order_events(oid: str) -> tuple[EventEnvelope, EventEnvelope]:
    placed = order_placed(oid)
    shipped = envelope("OrderShipped", oid, 2, {"orderId": oid, "customerId": "c1", "trackingNumber": "TN"})
    return placed, shipped


async def watermark(db) -> int:
    doc = await db.projector_state.find_one({"_id": "watermark"})
    return doc["position"] if doc else 0


async def test_successor_waits_for_predecessor_applied_by_another_replica(db):
    placed, shipped = order_events(f"o-{uuid.uuid4().hex[:8]}")
    replica_a = Projector(MongoViewSets(db), out_of_order_wait_s=30.0)
    replica_b = Projector(MongoViewSets(db), out_of_order_wait_s=30.0)
    waiting = asyncio.create_task(replica_a.handle(shipped))  # v2 reaches replica A first
    await asyncio.sleep(0.3)
    assert not waiting.done()  # neither applied nor given up: it waits for v1
    assert await db.orders.find_one({"_id": placed.aggregateId}) is None
    assert await replica_b.handle(placed) is True  # v1 lands at replica B
    assert await asyncio.wait_for(waiting, 30) is True  # v2 applied, no OutOfOrder raised
    view = await db.orders.find_one({"_id": placed.aggregateId})
    assert view["version"] == 2 and view["status"] == "shipped" and view["trackingNumber"] == "TN"
    assert [h["status"] for h in view["history"]] == ["placed", "shipped"]
    assert await watermark(db) >= shipped.position


async def test_gives_up_after_the_bounded_wait(db):
    placed, shipped = order_events(f"o-{uuid.uuid4().hex[:8]}")
    projector = Projector(MongoViewSets(db), out_of_order_wait_s=0.05)
    with pytest.raises(OutOfOrder):  # the consumer sends it to the retry queue
        await projector.handle(shipped)
    assert await db.orders.find_one({"_id": shipped.aggregateId}) is None
    assert await db.processed.find_one({"_id": shipped.position}) is None
    assert await projector.handle(placed) is True
    assert await projector.handle(shipped) is True  # the retry, once v1 is there
    assert (await db.orders.find_one({"_id": shipped.aggregateId}))["version"] == 2


async def test_concurrent_handlers_share_round_trips(db):
    sets = MongoViewSets(db)
    store = sets.store("")  # the live set (no pointer: the original one), cached by `sets`
    inserts: list[list[int]] = []
    writes: list[int] = []
    mark_processed, write_orders = store.mark_processed, store.write_orders

    async def counted_mark(positions):
        inserts.append(list(positions))
        await mark_processed(positions)

    async def counted_write(batch):
        writes.append(len(batch))
        return await write_orders(batch)

    store.mark_processed, store.write_orders = counted_mark, counted_write
    projector = Projector(sets)
    events = [order_placed(f"o-{uuid.uuid4().hex[:8]}") for _ in range(20)]
    assert all(await asyncio.gather(*(projector.handle(e) for e in events)))
    recorded = sorted(p for batch in inserts for p in batch)
    assert recorded == sorted(e.position for e in events)  # each position recorded once
    assert len(inserts) < len(events)  # ... by fewer inserts than events
    assert sum(writes) == 20 and len(writes) < len(events)  # each order written once, in batches
    # (earlier tests of this module applied every position before these)
    assert await watermark(db) == max(e.position for e in events)
    assert await db.orders.count_documents({"_id": {"$in": [e.aggregateId for e in events]}}) == 20
    # a duplicate in a batch with a new event: only the new one changes a view
    placed, shipped = order_events(f"o-{uuid.uuid4().hex[:8]}")
    assert await projector.handle(placed) is True
    assert await asyncio.gather(projector.handle(events[0]), projector.handle(shipped)) == [False, True]
    assert (await db.orders.find_one({"_id": shipped.aggregateId}))["status"] == "shipped"
