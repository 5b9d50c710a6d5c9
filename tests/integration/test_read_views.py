"""Projector + query service together: events published to cqrs.events (out of order and
redelivered), then every read query through RPC. Exact under redelivery and reordering."""

from __future__ import annotations

import json
import uuid

import aio_pika
import pytest

from cqrs_shared.messaging.rpc import RpcClient
from cqrs_shared.topology import EVENTS_EXCHANGE
from projector_service.config import ProjectorSettings
from projector_service.wiring import build as build_projector
from query_service.config import QuerySettings
from query_service.wiring import build as build_query


def ev(pos: int, etype: str, atype: str, agg: str, version: int, data: dict, ts: str) -> dict:
    return {"eventId": uuid.uuid4().hex, "eventType": etype, "aggregateId": agg, "aggregateType": atype,
            "version": version, "position": pos, "timestamp": ts, "correlationId": "corr",
            "causationId": "cmd", "schemaVersion": 1, "data": data, "metadata": {"userId": "u1"}}


ADDR = {"street": "s", "city": "c", "state": "st", "zip": "z"}
T0 = "2026-03-01T00:00:00.000Z"


def order(pos: int, oid: str, cid: str, name: str, email: str, items: list, total: str, ts: str) -> dict:
    return ev(pos, "OrderPlaced", "order", oid, 1, {
        "orderId": oid, "customerId": cid, "customer": {"id": cid, "name": name, "email": email},
        "items": [{"productId": p, "name": n, "quantity": q, "unitPrice": u, "lineTotal": lt, "stock": s}
                  for p, n, q, u, lt, s in items],
        "totalAmount": total, "shippingAddress": ADDR}, ts)


EVENTS = [
    ev(1, "CustomerRegistered", "customer", "c1", 1, {"customerId": "c1", "name": "Ann", "email": "ann@x.io",
                                                      "creditLimit": "100.00"}, T0),
    ev(2, "CustomerRegistered", "customer", "c2", 1, {"customerId": "c2", "name": "Bob", "email": "bob@x.io",
                                                      "creditLimit": "100.00"}, T0),
    ev(3, "ProductAdded", "product", "p1", 1, {"productId": "p1", "name": "Pen", "price": "1.50", "stock": 10}, T0),
    ev(4, "ProductAdded", "product", "p2", 1, {"productId": "p2", "name": "Ink", "price": "2.00", "stock": 5}, T0),
    order(5, "o1", "c1", "Ann", "ann@x.io", [("p1", "Pen", 2, "1.50", "3.00", 8)], "3.00",
          "2026-03-01T08:00:00.000Z"),
    order(6, "o2", "c1", "Ann", "ann@x.io", [("p1", "Pen", 1, "1.50", "1.50", 7), ("p2", "Ink", 1, "2.00", "2.00", 4)],
          "3.50", "2026-03-02T09:00:00.000Z"),
    order(7, "o3", "c2", "Bob", "bob@x.io", [("p2", "Ink", 3, "2.00", "6.00", 1)], "6.00",
          "2026-03-02T10:00:00.000Z"),
    ev(8, "OrderCancelled", "order", "o3", 2, {"orderId": "o3", "customerId": "c2", "reason": "r",
                                              "items": [{"productId": "p2", "quantity": 3, "stock": 4}]},
       "2026-03-02T11:00:00.000Z"),
    ev(9, "ProductRestocked", "product", "p1", 2, {"productId": "p1", "quantity": 5, "stock": 12},
       "2026-03-03T00:00:00.000Z"),
]
# out of order (later positions first, a cancel before its order), with redeliveries
SEQUENCE = [9, 8, 4, 6, 5, 6, 1, 7, 2, 3, 5, 9, 8]


@pytest.fixture(scope="module")
async def rpc(rabbit_vhost_url, mongo_url, mongo_db_name):
    proj = await build_projector(ProjectorSettings(amqp_url=rabbit_vhost_url, mongo_url=mongo_url,
                                                   mongo_db=mongo_db_name))
    query = await build_query(QuerySettings(amqp_url=rabbit_vhost_url, mongo_url=mongo_url, mongo_db=mongo_db_name))
    conn = await aio_pika.connect_robust(rabbit_vhost_url)
    ch = await conn.channel(publisher_confirms=True)
    exchange = await ch.get_exchange(EVENTS_EXCHANGE, ensure=False)
    for pos in SEQUENCE:
        e = EVENTS[pos - 1]
        await exchange.publish(aio_pika.Message(json.dumps(e).encode(), content_type="application/json",
                                                headers={"x-aggregate-id": e["aggregateId"]}),
                               routing_key=f"{e['aggregateType']}.{e['eventType']}")
    client = await RpcClient.connect(rabbit_vhost_url)
    first = await client.query({"queryType": "GetOrderDetails", "parameters": {"orderId": "o3"},
                                "minPosition": 9, "maxWaitMs": 20000})
    assert first["status"] == "ok", first
    yield client
    await client.close()
    await conn.close()
    await query.stop()
    await proj.stop()


async def ok(rpc, qtype: str, params: dict) -> dict:
    reply = await rpc.query({"queryType": qtype, "parameters": params, "minPosition": 9})
    assert reply["status"] == "ok", reply
    assert reply["position"] >= 9
    return reply["result"]


async def ids(rpc, qtype: str, params: dict) -> list[str]:
    return [i["id"] for i in (await ok(rpc, qtype, params))["items"]]


async def test_product_availability_stock_from_highest_position(rpc):
    assert await ok(rpc, "GetProductAvailability", {"productId": "p1"}) == {
        "productId": "p1", "name": "Pen", "price": "1.50", "stock": 12, "version": 2}
    assert (await ok(rpc, "GetProductAvailability", {"productId": "p2"}))["stock"] == 4
    reply = await rpc.query({"queryType": "GetProductAvailability", "parameters": {"productId": "nope"}})
    assert reply["error"]["code"] == "not_found"


async def test_list_customer_orders(rpc):
    res = await ok(rpc, "ListCustomerOrders", {"customerId": "c1"})
    assert res["total"] == 2 and res["page"] == 1 and res["pageSize"] == 20
    assert res["items"][0] == {"id": "o2", "status": "placed", "totalAmount": "3.50", "itemCount": 2,
                               "placedAt": "2026-03-02T09:00:00.000Z"}
    assert await ids(rpc, "ListCustomerOrders", {"customerId": "c1", "page": 2, "pageSize": 1}) == ["o1"]
    assert await ids(rpc, "ListCustomerOrders", {"customerId": "c2", "status": "placed"}) == []
    assert await ok(rpc, "ListCustomerOrders", {"customerId": "zz"}) == {
        "items": [], "total": 0, "page": 1, "pageSize": 20}


async def test_search_orders(rpc):
    assert await ids(rpc, "SearchOrders", {}) == ["o3", "o2", "o1"]
    assert await ids(rpc, "SearchOrders", {"text": "INK"}) == ["o3", "o2"]
    assert await ids(rpc, "SearchOrders", {"text": "bob@X"}) == ["o3"]
    assert await ids(rpc, "SearchOrders", {"text": "o1"}) == ["o1"]
    assert await ids(rpc, "SearchOrders", {"minAmount": "3.50", "maxAmount": "6"}) == ["o3", "o2"]
    assert await ids(rpc, "SearchOrders", {"status": "cancelled"}) == ["o3"]
    assert await ids(rpc, "SearchOrders", {"dateFrom": "2026-03-01", "dateTo": "2026-03-01"}) == ["o1"]


async def test_customer_summary_exact_under_redelivery(rpc):
    assert await ok(rpc, "GetCustomerSummary", {"customerId": "c1"}) == {
        "customerId": "c1", "name": "Ann", "email": "ann@x.io", "totalOrders": 2, "openOrders": 2,
        "cancelledOrders": 0, "totalSpent": "6.50", "averageOrderValue": "3.25",
        "lastOrderAt": "2026-03-02T09:00:00.000Z"}
    c2 = await ok(rpc, "GetCustomerSummary", {"customerId": "c2"})
    assert (c2["totalOrders"], c2["openOrders"], c2["cancelledOrders"], c2["totalSpent"],
            c2["averageOrderValue"]) == (1, 0, 1, "0.00", "0.00")
    reply = await rpc.query({"queryType": "GetCustomerSummary", "parameters": {"customerId": "zz"}})
    assert reply["error"]["code"] == "not_found"


async def test_daily_metrics(rpc):
    assert await ok(rpc, "GetDailyOrderMetrics", {"dateFrom": "2026-02-01", "dateTo": "2026-03-31"}) == {"days": [
        {"date": "2026-03-01", "orderCount": 1, "cancelledCount": 0, "totalRevenue": "3.00",
         "avgOrderValue": "3.00", "uniqueCustomers": 1},
        {"date": "2026-03-02", "orderCount": 2, "cancelledCount": 1, "totalRevenue": "3.50",
         "avgOrderValue": "3.50", "uniqueCustomers": 2}]}


async def test_popular_products(rpc):
    assert await ok(rpc, "GetPopularProducts", {}) == {"products": [
        {"productId": "p1", "name": "Pen", "quantitySold": 3, "orderCount": 2, "revenue": "4.50"},
        {"productId": "p2", "name": "Ink", "quantitySold": 1, "orderCount": 1, "revenue": "2.00"}]}
    assert [p["productId"] for p in (await ok(rpc, "GetPopularProducts", {"limit": 1}))["products"]] == ["p1"]
    assert (await ok(rpc, "GetPopularProducts", {"dateFrom": "2026-03-01", "dateTo": "2026-03-01"}))[
        "products"] == [{"productId": "p1", "name": "Pen", "quantitySold": 2, "orderCount": 1, "revenue": "3.00"}]
