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
    mark_processed, write_orders, extend = store.mark_processed, store.write_orders, store.extend_watermark

    async def counted_mark(positions):
        inserts.append(list(positions))
        await mark_processed(positions)

    async def counted_extend(expected, upto):
        watermark = await extend(expected, upto)
        if watermark is not None:  # recorded by raising the watermark: no documents
            inserts.append(list(range(expected + 1, upto + 1)))
        return watermark

    async def counted_write(batch):
        writes.append(len(batch))
        return await write_orders(batch)

    store.mark_processed, store.write_orders, store.extend_watermark = counted_mark, counted_write, counted_extend
    projector = Projector(sets)
    events = [order_placed(f"o-{uuid.uuid4().hex[:8]}") for _ in range(20)]
    assert all(await asyncio.gather(*(projector.handle(e) for e in events)))
    recorded = sorted(p for batch in inserts for p in batch)
    assert recorded == sorted(e.position for e in events)  # each position recorded once
    assert len(inserts) < len(events)  # ... by fewer writes than events
    assert sum(writes) == 20 and len(writes) < len(events)  # each order written once, in batches
    # (earlier tests of this module applied every position before these)
    assert await watermark(db) == max(e.position for e in events)
    assert await db.orders.count_documents({"_id": {"$in": [e.aggregateId for e in events]}}) == 20
    # a duplicate in a batch with a new event: only the new one changes a view
    placed, shipped = order_events(f"o-{uuid.uuid4().hex[:8]}")
    assert await projector.handle(placed) is True
    assert await asyncio.gather(projector.handle(events[0]), projector.handle(shipped)) == [False, True]
    assert (await db.orders.find_one({"_id": shipped.aggregateId}))["status"] == "shipped"


def at(event: EventEnvelope, position: int) -> EventEnvelope:
    return event.model_copy(update={"position": position})


@pytest.fixture
async def fresh_db(mongo_url):
    client = AsyncIOMotorClient(mongo_url)
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield client[name]
    await client.drop_database(name)
    client.close()


async def test_events_in_order_raise_the_watermark_without_processed_documents(fresh_db):
    """One replica, events in position order: after the first round, each round raises the
    watermark by compare-and-set (two round trips) and writes no `processed` document."""
    projector = Projector(MongoViewSets(fresh_db))
    for n in range(1, 6):
        assert await projector.handle(at(order_placed(f"o-{n}"), n))
    assert await watermark(fresh_db) == 5
    assert [d["_id"] async for d in fresh_db.processed.find({})] == [1]  # the first round's only


async def test_a_raise_also_covers_what_another_replica_recorded_above_it(fresh_db):
    """Replica B applied 3 before 2 existed and could only leave a `processed` document;
    replica A's compare-and-set for 2 then scans and raises the watermark over B's 3."""
    a = Projector(MongoViewSets(fresh_db))
    assert await a.handle(at(order_placed("o-1"), 1))  # A now knows the watermark: 1
    await MongoViewSets(fresh_db).store("").record_processed([])  # (B's read: 1)
    await MongoViewSets(fresh_db).store("").mark_processed([3])  # B applied 3: a gap at 2
    assert await a.handle(at(order_placed("o-2"), 2))
    assert await watermark(fresh_db) == 3


async def test_a_watermark_moved_by_another_replica_falls_back_to_documents(fresh_db):
    a, b = Projector(MongoViewSets(fresh_db)), Projector(MongoViewSets(fresh_db))
    store = MongoViewSets(fresh_db).store("")
    refused = []
    sets_a = a._sets  # noqa: SLF001 - count A's refused compare-and-sets
    store_a = sets_a.store("")
    extend = store_a.extend_watermark

    async def counted(expected, upto):
        result = await extend(expected, upto)
        if result is None:
            refused.append((expected, upto))
        return result

    store_a.extend_watermark = counted
    assert await a.handle(at(order_placed("o-1"), 1))
    assert await a.handle(at(order_placed("o-2"), 2))  # compare-and-set 1 -> 2
    assert await b.handle(at(order_placed("o-4"), 4))  # B: 4 while 3 is missing: a document
    assert await a.handle(at(order_placed("o-3"), 3))  # A: 2 -> 3, then over B's 4
    assert await watermark(fresh_db) == 4
    assert refused == []
    five = at(order_placed("o-5"), 5)
    assert await b.handle(five)  # B moves it to 5; A still believes 4 ...
    assert await a.handle(five) is False  # ... and gets 5 redelivered: its 4 -> 5 is refused
    assert refused == [(4, 5)]
    assert await watermark(fresh_db) == 5
    assert await a.handle(at(order_placed("o-6"), 6))  # A knows 5 again: 5 -> 6
    assert refused == [(4, 5)] and await watermark(fresh_db) == 6 == await store.watermark()
