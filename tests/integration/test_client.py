"""cqrs_client against the real command service (in-process), RabbitMQ and PostgreSQL:
typed errors, many requests in flight on one channel, the sync wrapper."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from cqrs_client import (CqrsClient, Duplicate, Forbidden, InsufficientStock, NotFound, RequestTimeout,
                         SyncCqrsClient, ValidationFailed)
from cqrs_client.errors import BrokerUnavailable, ConcurrencyConflict, ServiceUnavailable

ADMIN = {"user_id": "admin-1", "roles": ["admin"]}
ADDRESS = {"street": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}


@pytest.fixture(scope="module")
async def stack(command_app, rabbit_vhost_url):
    client = await CqrsClient.connect(rabbit_vhost_url)
    for _ in range(200):  # wait until the service has declared the topology and consumes
        try:
            await client.send("AddProduct", {"name": "warmup", "price": "1", "stock": 1}, timeout=0.5, **ADMIN)
            break
        except (RequestTimeout, ServiceUnavailable):
            await asyncio.sleep(0.1)
    yield client
    await client.close()


async def test_accepted_reply_and_typed_errors(stack):
    c, run = stack, uuid.uuid4().hex[:8]
    r = await c.send("RegisterCustomer", {"customerId": f"c-{run}", "name": "Ann", "email": "ann@example.com",
                                          "creditLimit": "100"}, **ADMIN)
    assert r["status"] == "accepted" and r["aggregateId"] == f"c-{run}" and r["version"] == 1
    await c.send("AddProduct", {"productId": f"p-{run}", "name": "Pen", "price": "2.50", "stock": 1}, **ADMIN)

    with pytest.raises(Duplicate) as ei:
        await c.send("AddProduct", {"productId": f"p-{run}", "name": "Pen", "price": "2.50", "stock": 1}, **ADMIN)
    assert ei.value.reply["status"] == "rejected" and ei.value.reply["error"]["code"] == "duplicate"

    order = {"customerId": f"c-{run}", "items": [{"productId": f"p-{run}", "quantity": 2}], "shippingAddress": ADDRESS}
    with pytest.raises(InsufficientStock) as ei:
        await c.send("PlaceOrder", order, **ADMIN)
    assert ei.value.details[0]["field"] == "data.items[0].quantity"

    with pytest.raises(NotFound):
        await c.send("ShipOrder", {"orderId": f"nope-{run}", "trackingNumber": "T1"}, **ADMIN)

    with pytest.raises(Forbidden):
        await c.send("PlaceOrder", order, user_id="someone-else", roles=["customer"])

    placed = await c.send("PlaceOrder", {**order, "orderId": f"o-{run}", "items": [{"productId": f"p-{run}", "quantity": 1}]},
                          user_id=f"c-{run}", roles=["customer"])
    with pytest.raises(ConcurrencyConflict):
        await c.send("ShipOrder", {"orderId": f"o-{run}", "trackingNumber": "T1"}, expected_version=5, **ADMIN)
    shipped = await c.send("ShipOrder", {"orderId": f"o-{run}", "trackingNumber": "T1"}, expected_version=1, **ADMIN)
    assert shipped["version"] == 2 and shipped["position"] > placed["position"]


async def test_invalid_data_is_rejected_locally_before_sending(stack):
    with pytest.raises(ValidationFailed) as ei:
        await stack.send("AddProduct", {"name": "x", "price": 2.5, "stock": 1}, **ADMIN)
    assert ei.value.details == [{"field": "data.price", "message": ei.value.details[0]["message"]}]
    with pytest.raises(ValidationFailed):
        await stack.send("FlyToMoon", {}, **ADMIN)
    # the server says the same when local validation is skipped
    with pytest.raises(ValidationFailed) as ei:
        await stack.send("AddProduct", {"name": "x", "price": 2.5, "stock": 1}, validate=False, **ADMIN)
    assert ei.value.reply["commandId"] is not None
    assert [d["field"] for d in ei.value.details] == ["data.price"]


async def test_same_command_id_returns_the_stored_reply(stack):
    run = uuid.uuid4().hex[:8]
    data = {"productId": f"idem-{run}", "name": "Ink", "price": "1", "stock": 1}
    first = await stack.send("AddProduct", data, command_id=f"cmd-{run}", **ADMIN)
    again = await stack.send("AddProduct", data, command_id=f"cmd-{run}", **ADMIN)
    assert again == first


async def test_fifty_requests_in_flight_on_one_channel(stack):
    run = uuid.uuid4().hex[:8]
    replies = await asyncio.gather(*(
        stack.send("AddProduct", {"productId": f"many-{run}-{i}", "name": f"P{i}", "price": "1", "stock": i}, **ADMIN)
        for i in range(50)))
    assert [r["aggregateId"] for r in replies] == [f"many-{run}-{i}" for i in range(50)]
    assert len({r["position"] for r in replies}) == 50
    assert not stack._pending  # every future was resolved and removed


async def test_timeout_when_nobody_answers(stack):
    # a query with no query service running: RequestTimeout, and nothing left pending
    with pytest.raises(RequestTimeout):
        await stack.query("GetOrderDetails", {"orderId": "x"}, timeout=0.3)
    assert not stack._pending


async def test_unreachable_broker_raises_broker_unavailable():
    with pytest.raises(BrokerUnavailable):
        await CqrsClient.connect("amqp://guest:guest@127.0.0.1:1/", connect_timeout=3)


async def test_sync_wrapper(stack, rabbit_vhost_url):
    run = uuid.uuid4().hex[:8]

    def work():
        with SyncCqrsClient(rabbit_vhost_url) as c:
            ok = c.send("AddProduct", {"productId": f"sync-{run}", "name": "S", "price": "3", "stock": 3}, **ADMIN)
            try:
                c.send("AddProduct", {"productId": f"sync-{run}", "name": "S", "price": "3", "stock": 3}, **ADMIN)
            except Duplicate as exc:
                return ok, exc
        return ok, None

    ok, dup = await asyncio.to_thread(work)
    assert ok["status"] == "accepted" and ok["aggregateId"] == f"sync-{run}"
    assert isinstance(dup, Duplicate) and dup.reply["error"]["code"] == "duplicate"


async def test_reconnects_after_the_broker_drops_the_connection(stack, rabbit_vhost_url, infra):
    # a client of its own on the same vhost; the broker closes every connection of the vhost
    # (the in-process command service reconnects too)
    from urllib.parse import unquote, urlsplit

    vhost = unquote(urlsplit(rabbit_vhost_url).path[1:])
    c = await CqrsClient.connect(rabbit_vhost_url)
    try:
        await c.send("AddProduct", {"name": "before", "price": "1", "stock": 1}, **ADMIN)
        infra.rabbitmqctl("close_all_connections", "-p", vhost, "test: reconnect")
        for _ in range(100):
            try:
                r = await c.send("AddProduct", {"name": "after", "price": "1", "stock": 1}, timeout=1, **ADMIN)
                break
            except (RequestTimeout, ServiceUnavailable, Exception):
                await asyncio.sleep(0.2)
        else:
            pytest.fail("no reply after the reconnection")
        assert r["status"] == "accepted"
    finally:
        await c.close()
