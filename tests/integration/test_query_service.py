"""Query service (GetOrderDetails) against real RabbitMQ and MongoDB; views are seeded directly."""

from __future__ import annotations

import asyncio
import json

import pytest
from motor.motor_asyncio import AsyncIOMotorClient

from cqrs_shared.messaging.rpc import RpcClient
from cqrs_shared.topology import QUERIES_EXCHANGE
from query_service.config import QuerySettings
from query_service.wiring import build

VIEW = {
    "id": "o-1", "status": "shipped", "customer": {"id": "c1", "name": "Ann", "email": "a@x.io"},
    "items": [{"productId": "p1", "name": "Pen", "quantity": 2, "unitPrice": "1.50", "lineTotal": "3.00"}],
    "totalAmount": "3.00", "shippingAddress": {"street": "s", "city": "c", "state": "st", "zip": "z"},
    "trackingNumber": "TN", "placedAt": "2026-01-01T00:00:00.000Z", "shippedAt": "2026-01-02T00:00:00.000Z",
    "deliveredAt": None, "cancelledAt": None, "cancellationReason": None, "refundedAt": None,
    "refundReason": None, "version": 2,
    "history": [{"status": "placed", "at": "2026-01-01T00:00:00.000Z", "by": "u1"},
                {"status": "shipped", "at": "2026-01-02T00:00:00.000Z", "by": "u2"}],
}


@pytest.fixture(scope="module")
async def db(mongo_url, mongo_db_name):
    client = AsyncIOMotorClient(mongo_url)
    db = client[mongo_db_name]
    await db.orders.insert_one({"_id": VIEW["id"], **VIEW})
    await db.projector_state.update_one({"_id": "watermark"}, {"$max": {"position": 10}}, upsert=True)
    yield db
    client.close()


@pytest.fixture(scope="module")
async def rpc(db, rabbit_vhost_url, mongo_url, mongo_db_name):
    app = await build(QuerySettings(amqp_url=rabbit_vhost_url, mongo_url=mongo_url, mongo_db=mongo_db_name))
    client = await RpcClient.connect(rabbit_vhost_url)
    yield client
    await client.close()
    await app.stop()


def q(params: dict, **extra) -> dict:
    return {"queryType": "GetOrderDetails", "parameters": params, **extra}


async def test_ok_without_history(rpc):
    reply = await rpc.query(q({"orderId": "o-1"}, queryId="q1"))
    assert set(reply) == {"queryId", "status", "result", "position", "error"}
    expected = {k: v for k, v in VIEW.items() if k != "history"}
    assert reply == {"queryId": "q1", "status": "ok", "result": expected, "position": 10, "error": None}


async def test_include_history(rpc):
    reply = await rpc.query(q({"orderId": "o-1", "includeHistory": True}))
    assert reply["status"] == "ok" and reply["result"] == VIEW


async def test_not_found(rpc):
    reply = await rpc.query(q({"orderId": "nope"}))
    assert reply["status"] == "error" and reply["error"]["code"] == "not_found" and reply["result"] is None
    assert reply["position"] == 10


@pytest.mark.parametrize("params, field", [
    ({}, "parameters.orderId"),
    ({"orderId": ""}, "parameters.orderId"),
    ({"orderId": "x" * 65}, "parameters.orderId"),
    ({"orderId": 5}, "parameters.orderId"),
    ({"orderId": "o-1", "includeHistory": "yes"}, "parameters.includeHistory"),
    ({"orderId": "o-1", "bogus": 1}, "parameters.bogus"),
])
async def test_validation_error(rpc, params, field):
    reply = await rpc.query(q(params))
    assert reply["status"] == "error" and reply["error"]["code"] == "validation_error"
    assert field in [d["field"] for d in reply["error"]["details"]]


async def test_envelope_errors(rpc):
    not_json = await rpc.call_raw(QUERIES_EXCHANGE, "GetOrderDetails", b"{nope")
    assert not_json["error"]["code"] == "validation_error" and not_json["queryId"] is None
    too_big = await rpc.call_raw(QUERIES_EXCHANGE, "GetOrderDetails", b" " * (1024 * 1024 + 1))
    assert too_big["error"]["code"] == "validation_error"
    mismatch = await rpc.call_raw(QUERIES_EXCHANGE, "SearchOrders", json.dumps(
        {"queryId": "m", "queryType": "GetOrderDetails", "parameters": {"orderId": "o-1"}}).encode())
    assert mismatch["queryId"] == "m" and mismatch["error"]["code"] == "validation_error"
    wait = await rpc.query(q({"orderId": "o-1"}, maxWaitMs=30001))
    assert wait["error"]["code"] == "validation_error"
    assert "maxWaitMs" in [d["field"] for d in wait["error"]["details"]]


async def test_unknown_query_type_via_alternate_exchange(rpc):
    reply = await rpc.query({"queryId": "u", "queryType": "GetEverything", "parameters": {}})
    assert reply["queryId"] == "u" and reply["status"] == "error"
    assert reply["error"]["code"] == "validation_error" and "GetEverything" in reply["error"]["message"]


@pytest.mark.parametrize("qtype,params", [
    ("SearchOrders", {"page": 0}),
    ("SearchOrders", {"pageSize": 101}),
    ("SearchOrders", {"minAmount": "1.234"}),
    ("SearchOrders", {"dateFrom": "2026-13-01"}),
    ("ListCustomerOrders", {}),
    ("GetDailyOrderMetrics", {"dateFrom": "2025-01-01", "dateTo": "2026-06-01"}),
    ("GetPopularProducts", {"limit": 0}),
    ("GetProductAvailability", {}),
])
async def test_invalid_parameters(rpc, qtype, params):
    reply = await rpc.query({"queryType": qtype, "parameters": params})
    assert reply["status"] == "error" and reply["error"]["code"] == "validation_error"
    assert reply["error"]["details"]


async def test_search_orders_on_seeded_view_defaults(rpc):
    reply = await rpc.query({"queryType": "SearchOrders", "parameters": {}})
    assert reply["status"] == "ok"
    assert reply["result"]["page"] == 1 and reply["result"]["pageSize"] == 20


async def test_min_position_stale(rpc):
    reply = await rpc.query(q({"orderId": "o-1"}, minPosition=1000, maxWaitMs=100))
    assert reply["status"] == "error" and reply["error"]["code"] == "stale"
    assert reply["position"] == 10 and reply["result"] is None


async def test_min_position_already_reached(rpc):
    reply = await rpc.query(q({"orderId": "o-1"}, minPosition=10, maxWaitMs=0))
    assert reply["status"] == "ok" and reply["position"] == 10


async def test_min_position_satisfied_after_watermark_advances(rpc, db):
    pending = asyncio.ensure_future(rpc.query(q({"orderId": "o-1"}, minPosition=12, maxWaitMs=5000)))
    others = [asyncio.ensure_future(rpc.query(q({"orderId": "o-1"}, minPosition=11, maxWaitMs=5000)))
              for _ in range(5)]
    await asyncio.sleep(0.3)
    assert not pending.done()
    await db.projector_state.update_one({"_id": "watermark"}, {"$max": {"position": 12}}, upsert=True)
    reply = await asyncio.wait_for(pending, 5)
    assert reply["status"] == "ok" and reply["position"] >= 12 and reply["result"]["id"] == "o-1"
    assert all(r["status"] == "ok" for r in await asyncio.gather(*others))
