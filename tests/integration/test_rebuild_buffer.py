"""The rebuild's write-behind buffer (projector_service.application.buffer) on real MongoDB
(nx-27017 stand-in or mongod): batches folded in memory and written together give the same
views as the live projector's event-by-event writes, with redeliveries, a full buffer flushed
midway, final-status orders written early, and live projectors writing the same set between
the fold and the flush."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from cqrs_shared.contracts.envelopes import EventEnvelope
from projector_service.adapters.mongo import MongoViewStore
from projector_service.application.apply import apply_events
from projector_service.application.buffer import FoldBuffer
from view_sets import assert_view_sets_equal

ADDRESS = {"street": "s", "city": "c", "state": "st", "zip": "z"}


@pytest.fixture(scope="module")
async def db(mongo_url, mongo_db_name):
    client = AsyncIOMotorClient(mongo_url)
    yield client[mongo_db_name]
    await client.drop_database(mongo_db_name)
    client.close()


class History:
    def __init__(self) -> None:
        self.events: list[EventEnvelope] = []
        self._ids = itertools.count(1)

    def add(self, etype: str, agg: str, version: int, data: dict, atype: str = "order") -> EventEnvelope:
        pos = len(self.events) + 1
        e = EventEnvelope.model_validate({
            "eventId": f"e{next(self._ids)}", "eventType": etype, "aggregateId": agg, "aggregateType": atype,
            "version": version, "position": pos, "timestamp": f"2026-01-01T00:{pos // 60:02d}:{pos % 60:02d}.000Z",
            "data": data, "metadata": {"userId": "u"}})
        self.events.append(e)
        return e

    def placed(self, oid: str, stock: int = 5) -> EventEnvelope:
        return self.add("OrderPlaced", oid, 1, {
            "orderId": oid, "customerId": "c1", "customer": {"id": "c1", "name": "Ann", "email": "a@x.io"},
            "items": [{"productId": "p1", "name": "Pen", "quantity": 1, "unitPrice": "1.50", "lineTotal": "1.50",
                       "stock": stock}], "totalAmount": "1.50", "shippingAddress": ADDRESS})

    def then(self, etype: str, oid: str, version: int) -> EventEnvelope:
        data = {"orderId": oid, "customerId": "c1"}
        if etype == "OrderShipped":
            data["trackingNumber"] = f"T{oid}"
        if etype in ("OrderCancelled", "OrderRefunded"):
            data["reason"] = "r"
        return self.add(etype, oid, version, data)


def random_history(n_orders: int, seed: int) -> History:
    """Customers, products and orders moving along placed -> shipped -> delivered -> refunded
    or placed -> cancelled, their events interleaved at random."""
    rnd = random.Random(seed)
    h = History()
    h.add("CustomerRegistered", "c1", 1, {"customerId": "c1", "name": "Ann", "email": "a@x.io"}, "customer")
    h.add("ProductAdded", "p1", 1, {"productId": "p1", "name": "Pen", "price": "1.50", "stock": 1000}, "product")
    paths = {}
    for i in range(n_orders):
        paths[f"o{i}"] = ["OrderPlaced", *rnd.choice([["OrderCancelled"], ["OrderShipped"],
                                                       ["OrderShipped", "OrderDelivered", "OrderRefunded"]])]
    progress = {oid: 0 for oid in paths}
    stock = 1000
    while progress:
        oid = rnd.choice(sorted(progress))
        step = progress[oid]
        if step == 0:
            stock -= 1
            h.placed(oid, stock)
        else:
            h.then(paths[oid][step], oid, step + 1)
        progress[oid] += 1
        if progress[oid] == len(paths[oid]):
            del progress[oid]
    return h


async def event_by_event(store: MongoViewStore, events: list[EventEnvelope]) -> None:
    """What the live projector writes: each event applied on its own, in position order."""
    for e in events:
        await apply_events(store, [e])
    await store.advance_watermark()


async def test_batches_folded_in_memory_give_the_views_of_event_by_event_writes(db):
    h = random_history(40, seed=3)
    await event_by_event(MongoViewStore(db, "r1"), h.events)
    store = MongoViewStore(db, "r2")
    buffer = FoldBuffer(store, max_orders=25, write_chunk=4)
    flushes = 0
    for i in range(0, len(h.events), 9):
        batch = h.events[i:i + 9]
        redelivered = h.events[max(0, i - 5):i]  # part of the previous batch comes again
        result = await buffer.add(redelivered + batch)
        assert not result.blocked and not result.invalid
        if buffer.full:
            assert await buffer.flush() == []
            flushes += 1
    assert await buffer.flush() == []
    assert flushes >= 1  # the full buffer was written midway, and later batches read those orders back
    await assert_view_sets_equal(db, "r1", "r2")
    assert await store.watermark() == len(h.events)


async def test_orders_in_a_final_status_are_written_before_the_flush(db):
    h = History()
    final = []
    for i in range(6):
        oid = f"f{i}"
        h.placed(oid)
        h.then("OrderCancelled", oid, 2)
        final.append(oid)
    h.placed("open")
    store = MongoViewStore(db, "r3")
    buffer = FoldBuffer(store, max_orders=1000, write_chunk=3)
    await buffer.add(h.events)
    stored: dict = {}
    for _ in range(200):  # the early writes run in the background (two chunks of 3)
        stored = await store.get_orders(final)
        if len(stored) == 6:
            break
        await asyncio.sleep(0.05)
    assert len(stored) == 6 and all(d["status"] == "cancelled" for d in stored.values())
    assert await store.get_orders(["open"]) == {}  # not final: still only in the buffer
    assert await store.watermark() == 0  # positions are recorded by the flush only
    # a redelivery of orders written early: read back, duplicates
    again = await buffer.add(h.events[:4])
    assert not again.blocked and sorted(e.position for e in again.done) == [1, 2, 3, 4]
    assert await buffer.flush() == []
    await event_by_event(MongoViewStore(db, "r4"), h.events)
    await assert_view_sets_equal(db, "r4", "r3")
    assert await store.watermark() == len(h.events)


async def test_live_writes_between_the_fold_and_the_flush_are_kept_or_overwritten_by_version(db):
    h = History()
    a1, a2, a3 = h.placed("a"), h.then("OrderShipped", "a", 2), h.then("OrderDelivered", "a", 3)
    b1, b2, b3 = h.placed("b"), h.then("OrderShipped", "b", 2), h.then("OrderDelivered", "b", 3)
    c1, c2, c3 = h.placed("c"), h.then("OrderShipped", "c", 2), h.then("OrderDelivered", "c", 3)
    store = MongoViewStore(db, "r5")
    await apply_events(store, [c1])  # c is stored at version 1 before the rebuild reads it
    buffer = FoldBuffer(store, max_orders=1000)
    await buffer.add([a1, a2, a3, b1, b2, c2])  # a: v3 (insert), b: v2 (insert), c: v2 (guard: v1)
    # live projectors write the same set meanwhile
    await apply_events(store, [a1])  # a is at v1: the rebuild's insert loses, then replaces it
    await apply_events(store, [b1, b2, b3])  # b is at v3: newer than the buffered v2, kept
    await apply_events(store, [c2, c3])  # c is at v3: the guard on v1 loses, the stored v3 is kept
    assert await buffer.flush() == []
    stored = await store.get_orders(["a", "b", "c"])
    assert {oid: d["version"] for oid, d in stored.items()} == {"a": 3, "b": 3, "c": 3}
    await event_by_event(MongoViewStore(db, "r6"), h.events)
    await assert_view_sets_equal(db, "r6", "r5")
    assert await store.advance_watermark() == len(h.events)


class _Batch:
    def __init__(self, events: list[EventEnvelope]) -> None:
        self.events = events

    async def done(self, invalid) -> None:
        assert not invalid


class EndlessFeed:
    """History that keeps coming (a replay still running): the first batch places an order,
    then the same customer registration again and again until `dry` is set."""

    def __init__(self, first: list[EventEnvelope], filler: EventEnvelope) -> None:
        self.replay_ends: list[int] = []
        self.dry = False
        self._first, self._filler = first, filler

    async def request(self, from_position: int) -> None:
        pass

    async def next_batch(self, max_events: int, idle_s: float):
        if self._first:
            batch, self._first = self._first, []
            return _Batch(batch)
        if self.dry:
            return None
        await asyncio.sleep(0.01)
        return _Batch([self._filler])


@pytest.mark.parametrize("phase, written_while_flowing", [("replay", False), ("strict", True)])
async def test_once_the_set_is_strict_each_batch_is_written_at_once(db, phase, written_while_flowing):
    from projector_service.adapters.mongo import MongoSetRegistry
    from projector_service.application.rebuild import Rebuilder

    h = History()
    reg = h.add("CustomerRegistered", "c1", 1, {"customerId": "c1", "name": "Ann", "email": "a@x.io"}, "customer")
    placed = h.placed("w1")
    name = "r7" if phase == "replay" else "r8"
    new, old = MongoViewStore(db, name), MongoViewStore(db, "r9")
    feed = EndlessFeed([reg, placed], reg)
    rebuilder = Rebuilder(MongoSetRegistry(db), feed, owner="test", idle_s=0.05)
    await rebuilder._request(1)  # a replay is outstanding: the loop runs until its end arrives
    task = asyncio.create_task(rebuilder._catch_up(new, old, phase))
    found = {}
    for _ in range(40):  # while history keeps flowing (never dry)
        found = await new.get_orders(["w1"])
        if found:
            break
        await asyncio.sleep(0.05)
    assert bool(found) == written_while_flowing
    feed.dry = True
    feed.replay_ends.append(placed.position)
    await asyncio.wait_for(task, 30)
    assert (await new.get_orders(["w1"]))["w1"]["version"] == 1  # written by the end either way
    assert await new.watermark() == placed.position
