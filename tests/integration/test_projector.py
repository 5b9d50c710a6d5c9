"""Projector service against real RabbitMQ and MongoDB (nx-27017 stand-in or mongod)."""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from prometheus_client import REGISTRY

from cqrs_shared.topology import EVENTS_EXCHANGE, PROJECTOR_QUEUE
from projector_service.config import ProjectorSettings
from projector_service.wiring import build

TS = "2026-11-22T10:30:00.{:03d}Z"
class _Positions:
    """Gap-free over the module, as the command service guarantees; remembers the last."""

    def __init__(self) -> None:
        self.last = 0

    def __next__(self) -> int:
        self.last += 1
        return self.last


_positions = _Positions()


@pytest.fixture(scope="module")
async def projector(rabbit_vhost_url, mongo_url, mongo_db_name):
    app = await build(ProjectorSettings(amqp_url=rabbit_vhost_url, mongo_url=mongo_url, mongo_db=mongo_db_name))
    yield app
    await app.stop()


@pytest.fixture(scope="module")
async def db(mongo_url, mongo_db_name):
    client = AsyncIOMotorClient(mongo_url)
    yield client[mongo_db_name]
    client.close()


@pytest.fixture(scope="module")
async def channel(projector, rabbit_vhost_url):
    conn = await aio_pika.connect_robust(rabbit_vhost_url)
    ch = await conn.channel(publisher_confirms=True)
    yield ch
    await conn.close()


def event(etype: str, agg: str, version: int, data: dict, *, atype: str = "order", position: int | None = None) -> dict:
    return {"eventId": uuid.uuid4().hex, "eventType": etype, "aggregateId": agg, "aggregateType": atype,
            "version": version, "position": position if position is not None else next(_positions),
            "timestamp": TS.format(version), "correlationId": "corr", "causationId": "cmd",
            "schemaVersion": 1, "data": data, "metadata": {"userId": "user_1"}}


def placed(order_id: str) -> dict:
    return event("OrderPlaced", order_id, 1, {
        "orderId": order_id, "customerId": "c1", "customer": {"id": "c1", "name": "Ann", "email": "a@x.io"},
        "items": [{"productId": "p1", "name": "Pen", "quantity": 2, "unitPrice": "1.50", "lineTotal": "3.00",
                   "stock": 5}],
        "totalAmount": "3.00", "shippingAddress": {"street": "s", "city": "c", "state": "st", "zip": "z"}})


async def publish(channel, ev: dict | bytes, routing_key: str | None = None) -> None:
    exchange = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
    if isinstance(ev, dict):
        body, rk, headers = json.dumps(ev).encode(), f"{ev['aggregateType']}.{ev['eventType']}", {
            "x-aggregate-id": ev["aggregateId"]}
    else:
        body, rk, headers = ev, routing_key or "order.OrderPlaced", {}
    await exchange.publish(aio_pika.Message(body, content_type="application/json", headers=headers,
                                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=rk)


async def eventually(fn, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await fn()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def watermark(db) -> int:
    doc = await db.projector_state.find_one({"_id": "watermark"})
    return doc["position"] if doc else 0


async def test_applied_once_under_redelivery(channel, db):
    oid = f"o-{uuid.uuid4().hex[:8]}"
    e1 = placed(oid)
    e2 = event("OrderShipped", oid, 2, {"orderId": oid, "customerId": "c1", "trackingNumber": "TN"})
    for e in (e1, e1, e2, e2):
        await publish(channel, e)
    await eventually(lambda: _has_position(db, e2["position"]))
    view = await db.orders.find_one({"_id": oid})
    assert view["version"] == 2 and view["status"] == "shipped" and view["trackingNumber"] == "TN"
    assert [h["status"] for h in view["history"]] == ["placed", "shipped"]


async def _has_position(db, position: int) -> bool:
    return await watermark(db) >= position


async def test_out_of_order_ends_correct(channel, db):
    oid = f"o-{uuid.uuid4().hex[:8]}"
    e1 = placed(oid)
    e2 = event("OrderCancelled", oid, 2, {"orderId": oid, "customerId": "c1", "reason": "nope", "items": []})
    retried = _retried()
    await publish(channel, e2)  # v2 first: after a short wait in the process, to the retry queue
    await eventually(lambda: _async(_retried() > retried))
    await publish(channel, e1)
    await eventually(lambda: _has_position(db, e2["position"]))
    view = await db.orders.find_one({"_id": oid}, {"_id": 0})
    assert view["status"] == "cancelled" and view["version"] == 2
    assert view["cancellationReason"] == "nope" and view["cancelledAt"] == TS.format(2)
    assert view["placedAt"] == TS.format(1) and view["refundedAt"] is None
    assert view["history"] == [{"status": "placed", "at": TS.format(1), "by": "user_1"},
                               {"status": "cancelled", "at": TS.format(2), "by": "user_1"}]


def _retried() -> float:
    """Messages the projector (in this process) sent to a retry queue, of any type."""
    return sum(s.value for m in REGISTRY.collect() if m.name == "cqrs_consumer_messages"
               for s in m.samples if s.name == "cqrs_consumer_messages_total"
               and s.labels["queue"] == PROJECTOR_QUEUE.name and s.labels["outcome"] == "retried")


async def _async(value):
    return value


async def test_non_json_goes_to_dlq(channel):
    await publish(channel, b"not json {")
    dlq = await channel.declare_queue(PROJECTOR_QUEUE.dlq, durable=True, passive=True)

    async def get():
        return await dlq.get(no_ack=True, fail=False)

    msg = await eventually(get)
    assert msg.body == b"not json {"
    assert "not JSON" in msg.headers["x-error"]
    assert msg.headers["x-service"] == "projector-service"


async def test_watermark_advances_contiguously(channel, db):
    (w,) = await eventually(lambda: _settled(db))
    p1, p2 = next(_positions), next(_positions)
    assert p1 == w + 1 and p2 == w + 2
    await publish(channel, event("CustomerRegistered", f"c-{p2}", 1, {"customerId": "x"}, atype="customer",
                                 position=p2))
    await eventually(lambda: db.processed.find_one({"_id": p2}))
    await asyncio.sleep(0.2)
    assert await watermark(db) == w
    await publish(channel, event("ProductAdded", f"p-{p1}", 1, {"productId": "p"}, atype="product",
                                 position=p1))
    await eventually(lambda: _has_position(db, p2))
    assert await watermark(db) == p2


async def _settled(db):
    # every position handed out so far is applied (next(_positions) is not consumed here)
    w = await watermark(db)
    return (w,) if w == _positions.last else None
