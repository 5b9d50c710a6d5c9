"""`projector-service rebuild` against the real stack (in-process command service, projector
and query service on the module's vhost, PostgreSQL database and MongoDB database): the
history is replayed over RabbitMQ into a fresh collection set while queries keep being answered
from the live one, then the pointer moves in one update.

The no-downtime test keeps several clients querying through the query service for the whole
rebuild, and checks every answer: no error, and never less than what was known before it
was sent (an order known to exist is found, order counts never drop, a customer's summary
never loses orders)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from typer.testing import CliRunner

from cqrs_shared.messaging.rpc import RpcClient
from projector_service.adapters.amqp import AmqpHistoryFeed
from projector_service.adapters.mongo import MongoSetRegistry
from projector_service.application.rebuild import RebuildRefused, Rebuilder
from projector_service.cli import app as projector_cli
from projector_service.config import ProjectorSettings
from projector_service.wiring import build as build_projector, rebuild
from query_service.config import QuerySettings
from query_service.wiring import build as build_query
from view_sets import CommandStack, assert_view_sets_equal

ADMIN = {"userId": "admin-1", "metadata": {"roles": ["admin"]}}
ADDRESS = {"street": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}
CUSTOMERS = [f"c{i}" for i in range(4)]
PRODUCTS = [f"p{i}" for i in range(5)]
FAST = {"propagation_s": 1.2, "idle_s": 0.2}  # the processes' pointer TTL is 0.5 s


class Stack(CommandStack):
    def __init__(self, client: RpcClient, db, settings: ProjectorSettings) -> None:
        super().__init__(client, db)
        self.settings = settings
        self.orders: dict[str, str] = {}  # order id -> customer id

    async def place(self, n: int) -> None:
        async def one(i: int) -> None:
            oid, cid = f"o-{uuid.uuid4().hex[:10]}", CUSTOMERS[i % len(CUSTOMERS)]
            await self.command({"commandType": "PlaceOrder", **ADMIN, "data": {
                "orderId": oid, "customerId": cid, "shippingAddress": ADDRESS,
                "items": [{"productId": PRODUCTS[i % len(PRODUCTS)], "quantity": 1},
                          {"productId": PRODUCTS[(i + 1) % len(PRODUCTS)], "quantity": 2}]}})
            self.orders[oid] = cid
            if i % 3 == 0:
                await self.command({"commandType": "ShipOrder", **ADMIN,
                                    "data": {"orderId": oid, "trackingNumber": f"T{i}"}})
            elif i % 7 == 0:
                await self.command({"commandType": "CancelOrder", **ADMIN, "data": {"orderId": oid, "reason": "r"}})

        for start in range(0, n, 20):
            await asyncio.gather(*(one(i) for i in range(start, min(n, start + 20))))

    async def query(self, qtype: str, params: dict, **extra) -> dict:
        return await self.client.query({"queryType": qtype, "parameters": params, **extra})


@pytest.fixture(scope="module")
async def stack(command_app, rabbit_vhost_url, pg_dsn, mongo_url, mongo_db_name):
    settings = ProjectorSettings(amqp_url=rabbit_vhost_url, mongo_url=mongo_url, mongo_db=mongo_db_name,
                                 rebuild_grace_seconds=4.0, rebuild_batch=500)
    projectors = [await build_projector(settings), await build_projector(settings)]  # two replicas
    query = await build_query(QuerySettings(amqp_url=rabbit_vhost_url, mongo_url=mongo_url,
                                            mongo_db=mongo_db_name))
    client = await RpcClient.connect(rabbit_vhost_url)
    mongo = AsyncIOMotorClient(mongo_url, tz_aware=True)
    s = Stack(client, mongo[mongo_db_name], settings)
    await asyncio.gather(*(s.command({"commandType": "RegisterCustomer", **ADMIN, "data": {
        "customerId": c, "name": f"Name {c}", "email": f"{c}@example.com", "creditLimit": "1000000"}})
        for c in CUSTOMERS))
    await asyncio.gather(*(s.command({"commandType": "AddProduct", **ADMIN, "data": {
        "productId": p, "name": f"Product {p}", "price": "1.25", "stock": 100000}}) for p in PRODUCTS))
    await s.place(60)
    await s.settled()
    yield s
    await client.close()
    await query.stop()
    for p in projectors:
        await p.stop()
    mongo.close()


async def test_rebuild_under_steady_query_load_never_fails_nor_shows_a_partial_view(stack):
    known = dict(stack.orders)
    per_customer = {c: sum(1 for v in known.values() if v == c) for c in CUSTOMERS}
    failures: list[str] = []
    answered: list[float] = []
    stop = asyncio.Event()

    def check(ok: bool, what: str, reply: dict) -> None:
        answered.append(time.monotonic())
        if not ok:
            failures.append(f"{what}: {reply}")

    async def load(worker: int) -> None:
        rnd = random.Random(worker)
        while not stop.is_set():
            kind = rnd.randrange(4)
            if kind == 0:
                oid = rnd.choice(list(known))
                r = await stack.query("GetOrderDetails", {"orderId": oid})
                check(r["status"] == "ok" and r["result"]["id"] == oid, "GetOrderDetails", r)
            elif kind == 1:
                r = await stack.query("SearchOrders", {"pageSize": 5})
                check(r["status"] == "ok" and r["result"]["total"] >= len(known), "SearchOrders", r)
            elif kind == 2:
                c = rnd.choice(CUSTOMERS)
                r = await stack.query("GetCustomerSummary", {"customerId": c})
                check(r["status"] == "ok" and r["result"]["totalOrders"] >= per_customer[c]
                      and r["result"]["name"] == f"Name {c}", "GetCustomerSummary", r)
            else:
                p = rnd.choice(PRODUCTS)
                r = await stack.query("GetProductAvailability", {"productId": p})
                check(r["status"] == "ok" and r["result"]["name"] == f"Product {p}", "GetProductAvailability", r)

    async def live_writes() -> None:  # the live projectors keep working during the rebuild
        while not stop.is_set():
            await stack.place(3)
            await asyncio.sleep(0.05)

    writer = asyncio.create_task(live_writes())
    workers = [asyncio.create_task(load(i)) for i in range(4)]
    await asyncio.sleep(0.5)
    started = time.monotonic()
    reports = []
    result = await rebuild(stack.settings, reports.append, **FAST)
    switched = time.monotonic()
    stop.set()
    await writer  # (the old set is written until its grace period ends)
    stop.clear()
    await asyncio.sleep(1.5)  # past the pointer TTL: queries now use the new set
    stop.set()
    await asyncio.gather(*workers)

    assert not failures, failures[:5]
    during = [t for t in answered if started <= t <= switched]
    assert len(during) >= 20, f"only {len(during)} queries answered during the rebuild"
    assert result.view_set == "r1" and result.previous == ""
    assert result.applied >= len(known) and reports and reports[-1].phase == "verify"
    pointer = await stack.db.projector_state.find_one({"_id": "views"})
    assert pointer["live"] == "r1" and pointer["building"] is None and pointer["retiring"] == ""

    # every order placed before, during and after the switch is in the new set, and the new
    # set is exactly what the old one holds (the old set is still there and still readable)
    await stack.settled()
    await asyncio.sleep(0.3)
    assert set(stack.orders) <= {d["_id"] async for d in stack.db.orders_r1.find({}, {"_id": 1})}
    await assert_view_sets_equal(stack.db, "", "r1")
    reply = await stack.query("SearchOrders", {"pageSize": 1}, minPosition=stack.position)
    assert reply["status"] == "ok" and reply["result"]["total"] == len(stack.orders)
    wm = await stack.db.projector_state.find_one({"_id": "watermark_r1"})
    assert reply["position"] == wm["position"] >= stack.position


class DoubleFeed(AmqpHistoryFeed):
    """Every history request is sent twice: each event reaches the rebuild at least twice."""

    async def request(self, from_position: int) -> None:
        await super().request(from_position)
        await super().request(from_position)


async def test_second_rebuild_with_redelivered_history_gives_the_same_views_and_drops_old_sets(stack):
    from projector_service.adapters.amqp import connect_amqp

    await stack.place(10)
    await stack.settled()
    conn = await connect_amqp(stack.settings.amqp_url)
    feed = DoubleFeed(conn)
    await feed.start()
    try:
        result = await Rebuilder(MongoSetRegistry(stack.db), feed, owner="test", batch_size=300,
                                 grace_s=1.0, **FAST).run()
    finally:
        await feed.stop()
        await conn.close()
    assert result.view_set == "r2" and result.previous == "r1"
    assert result.dropped == [""]  # the original set, retired by the first rebuild
    names = set(await stack.db.list_collection_names())
    assert "orders" not in names and "processed" not in names and {"orders_r1", "orders_r2"} <= names
    assert await stack.db.projector_state.find_one({"_id": "watermark"}) is None
    await stack.settled()
    await asyncio.sleep(0.3)
    await assert_view_sets_equal(stack.db, "r1", "r2")
    wm = await stack.db.projector_state.find_one({"_id": "watermark_r2"})
    assert wm["position"] == stack.position
    reply = await stack.query("SearchOrders", {"pageSize": 1}, minPosition=stack.position)
    assert reply["status"] == "ok" and reply["result"]["total"] == len(stack.orders)


async def test_a_second_rebuild_is_refused_while_one_runs(stack):
    import aio_pika

    from cqrs_shared.topology import REBUILD_QUEUE

    registry = MongoSetRegistry(stack.db)
    pointer = await registry.read()
    from dataclasses import replace
    from datetime import datetime, timezone

    busy = replace(pointer, generation=pointer.generation + 1, building="r99", owner="elsewhere",
                   heartbeat_at=datetime.now(timezone.utc))
    assert await registry.replace(busy, pointer.generation)
    amqp = await aio_pika.connect_robust(stack.settings.amqp_url)
    try:
        ch = await amqp.channel()
        # what the running rebuild's history queue holds: the refused one must neither purge nor consume it
        await ch.default_exchange.publish(aio_pika.Message(b"{}", message_id="history-of-the-running-one"),
                                          routing_key=REBUILD_QUEUE.name)
        with pytest.raises(RebuildRefused, match="r99"):
            await rebuild(stack.settings, **FAST)
        held = await ch.declare_queue(REBUILD_QUEUE.name, durable=True, passive=True)
        msg = await held.get(no_ack=True, fail=False)
        assert msg is not None and msg.message_id == "history-of-the-running-one"
    finally:
        await amqp.close()
        assert await registry.replace(replace(busy, generation=busy.generation + 1, building=None, owner=None,
                                              heartbeat_at=None), busy.generation)
    assert (await registry.read()).live == pointer.live


def test_cli_accepts_only_all_views():
    result = CliRunner().invoke(projector_cli, ["rebuild", "orders"])
    assert result.exit_code == 2 and "only `all`" in result.output


async def test_an_event_that_cannot_be_applied_goes_to_the_rebuild_dlq_and_the_rebuild_completes(stack, pg_dsn):
    import json

    import aio_pika
    import asyncpg

    from cqrs_shared.topology import REBUILD_QUEUE

    # a stored OrderPlaced without items: the live projector dead-letters it, so does the rebuild
    conn = await asyncpg.connect(pg_dsn)
    try:
        async with conn.transaction():
            pos = await conn.fetchval("UPDATE position_counter SET value = value + 1 RETURNING value")
            event_id = uuid.uuid4()
            env = {"eventId": str(event_id), "eventType": "OrderPlaced", "aggregateId": "o-poison",
                   "aggregateType": "order", "version": 1, "position": pos, "timestamp": "2026-01-01T00:00:00.000Z",
                   "data": {"orderId": "o-poison", "customerId": "c0"}, "metadata": {}}
            await conn.execute(
                "INSERT INTO events (position, event_id, aggregate_type, aggregate_id, version, event_type, envelope,"
                " created_at) VALUES ($1, $2, 'order', 'o-poison', 1, 'OrderPlaced', $3, now())",
                pos, event_id, json.dumps(env))
            await conn.execute("SELECT pg_notify('outbox', '')")
    finally:
        await conn.close()
    result = await rebuild(stack.settings, **FAST)
    assert result.watermark == pos - 1  # as in the live set: the poison position is never applied
    amqp = await aio_pika.connect_robust(stack.settings.amqp_url)
    try:
        ch = await amqp.channel()
        dlq = await ch.declare_queue(REBUILD_QUEUE.dlq, durable=True, passive=True)
        msg = await dlq.get(no_ack=True, fail=False)
        assert msg is not None and json.loads(msg.body)["eventId"] == str(event_id)
        assert "items" in msg.headers["x-error"] and msg.headers["x-original-queue"] == REBUILD_QUEUE.name
    finally:
        await amqp.close()
    reply = await stack.query("GetOrderDetails", {"orderId": next(iter(stack.orders))})
    assert reply["status"] == "ok" and reply["position"] == pos - 1
