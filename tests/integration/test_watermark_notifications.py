"""Watermark notifications over the real broker: the projector's announcer publishes, the
query service trusts what was announced (the views hold at least that much) and wakes the
queries that wait for it; malformed notifications change nothing."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from cqrs_shared.messaging.rpc import RpcClient
from cqrs_shared.topology import INTERNAL_EXCHANGE, WATERMARK_ROUTING_KEY
from projector_service.adapters.watermark import WatermarkAnnouncer
from query_service.config import QuerySettings
from query_service.wiring import build

ORDER = {"id": "o-1", "status": "placed", "customer": {"id": "c1", "name": "Ann", "email": "a@x.io"},
         "items": [], "totalAmount": "0.00", "shippingAddress": {"street": "s", "city": "c", "state": "st", "zip": "z"},
         "trackingNumber": None, "placedAt": "2026-01-01T00:00:00.000Z", "shippedAt": None, "deliveredAt": None,
         "cancelledAt": None, "cancellationReason": None, "refundedAt": None, "refundReason": None,
         "version": 1, "history": []}


@pytest.fixture(scope="module")
async def stack(rabbit_vhost_url, mongo_url, mongo_db_name):
    client = AsyncIOMotorClient(mongo_url)
    db = client[mongo_db_name]
    await db.orders.insert_one({"_id": "o-1", **ORDER})
    await db.projector_state.update_one({"_id": "watermark"}, {"$max": {"position": 10}}, upsert=True)
    app = await build(QuerySettings(amqp_url=rabbit_vhost_url, mongo_url=mongo_url, mongo_db=mongo_db_name,
                                    health_port=-1))
    connection = await aio_pika.connect_robust(rabbit_vhost_url)
    announcer = WatermarkAnnouncer(connection, heartbeat_s=0.2)
    await announcer.start()
    rpc = await RpcClient.connect(rabbit_vhost_url)
    yield rpc, announcer, connection, db
    await rpc.close()
    await announcer.stop()
    await connection.close()
    await app.stop()
    client.close()


def get(min_position: int | None = None, wait_ms: int = 20000) -> dict:
    extra = {"minPosition": min_position, "maxWaitMs": wait_ms} if min_position is not None else {}
    return {"queryType": "GetOrderDetails", "parameters": {"orderId": "o-1"}, **extra}


async def test_a_waiting_query_is_answered_once_the_position_is_announced(stack):
    rpc, announcer, _, db = stack
    waiting = asyncio.ensure_future(rpc.query(get(min_position=15), timeout=30))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # the stored watermark is 10
    await announcer.announce("", 15)  # the document is not touched: only the announcement says 15
    reply = await asyncio.wait_for(waiting, 25)
    assert reply["status"] == "ok" and reply["position"] == 15
    assert (await db.projector_state.find_one({"_id": "watermark"}))["position"] == 10


async def test_queries_use_the_announced_watermark_and_announcements_never_lower_it(stack):
    rpc, announcer, _, _ = stack
    await announcer.announce("", 20)
    await announcer.announce("", 12)  # an older value (another replica) does not move it back
    for _ in range(50):
        reply = await rpc.query(get())
        if reply["position"] == 20:
            break
        await asyncio.sleep(0.05)
    assert reply["status"] == "ok" and reply["position"] == 20
    assert (await rpc.query(get(min_position=20, wait_ms=0)))["status"] == "ok"


async def test_announcements_of_another_set_and_malformed_ones_change_nothing(stack):
    rpc, announcer, connection, _ = stack
    before = (await rpc.query(get()))["position"]
    channel = await connection.channel()
    exchange = await channel.get_exchange(INTERNAL_EXCHANGE)
    for body in (b"not json", b'{"views": "", "watermark": "99"}', b'{"views": "../x", "watermark": 99}',
                 b'{"views": "", "watermark": -1}', b'{"views": ""}', b'[1]'):
        await exchange.publish(aio_pika.Message(body), routing_key=WATERMARK_ROUTING_KEY)
    await announcer.announce("r7", 500)  # a set that is not live
    await asyncio.sleep(0.5)
    reply = await rpc.query(get(min_position=before + 1, wait_ms=300))
    # not moved by any of them (it may fall back to the stored 10 once the "" announcements stop)
    assert reply["status"] == "error" and reply["error"]["code"] == "stale" and reply["position"] <= before
    await channel.close()
