"""The command service against the real RabbitMQ and PostgreSQL: RPC replies, the outbox
in the same transaction, the relay with confirms, idempotency and bad input."""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import asyncpg
import pytest

from cqrs_shared.messaging.rpc import RpcClient

ADMIN = {"userId": "admin-1", "metadata": {"roles": ["admin"]}}
ADDRESS = {"street": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}


@pytest.fixture(scope="module")
async def stack(command_app, rabbit_vhost_url, pg_dsn):
    client = await RpcClient.connect(rabbit_vhost_url)
    # an independent subscriber on cqrs.events, to see what the relay publishes
    conn = await aio_pika.connect_robust(rabbit_vhost_url)
    ch = await conn.channel()
    for _ in range(100):  # the service declares the topology at start
        try:
            ex = await (await conn.channel()).get_exchange("cqrs.events", ensure=True)
            break
        except Exception:
            await asyncio.sleep(0.05)
    q = await ch.declare_queue("", exclusive=True)
    await q.bind(ex, "#")
    yield {"client": client, "events": q, "dsn": pg_dsn, "app": command_app}
    await client.close()
    await conn.close()


async def _events(queue, n, timeout=5.0):
    out = []
    async with asyncio.timeout(timeout):
        async with queue.iterator() as it:
            async for msg in it:
                await msg.ack()
                out.append((msg, json.loads(msg.body)))
                if len(out) == n:
                    return out
    return out


async def _count(dsn, sql, *args):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def test_typical_journey_appends_and_publishes_events(stack):
    client, run = stack["client"], uuid.uuid4().hex[:8]
    r1 = await client.send_command({"commandType": "RegisterCustomer", **ADMIN, "data": {
        "customerId": f"c-{run}", "name": " Ann ", "email": "ann@example.com", "creditLimit": "100"}})
    r2 = await client.send_command({"commandType": "AddProduct", **ADMIN, "data": {
        "productId": f"p-{run}", "name": "Pen", "price": "2.5", "stock": 10}})
    r3 = await client.send_command({"commandType": "PlaceOrder", **ADMIN, "metadata": {"roles": ["admin"], "correlationId": f"corr-{run}"},
                                    "data": {"orderId": f"o-{run}", "customerId": f"c-{run}",
                                             "items": [{"productId": f"p-{run}", "quantity": 4}], "shippingAddress": ADDRESS}})
    assert [r["status"] for r in (r1, r2, r3)] == ["accepted"] * 3, (r1, r2, r3)
    assert r3["aggregateId"] == f"o-{run}" and r3["version"] == 1 and r3["error"] is None
    assert r1["position"] < r2["position"] < r3["position"]
    events = await _events(stack["events"], 3)
    by_type = {e["eventType"]: (m, e) for m, e in events}
    msg, placed = by_type["OrderPlaced"]
    assert msg.message_id == placed["eventId"] and msg.routing_key == "order.OrderPlaced"
    assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert placed["position"] == r3["position"] and placed["causationId"] == r3["commandId"]
    assert placed["correlationId"] == f"corr-{run}" and placed["metadata"] == {"userId": "admin-1"}
    assert placed["timestamp"].endswith("Z") and len(placed["timestamp"]) == 24
    assert placed["data"]["customer"] == {"id": f"c-{run}", "name": "Ann", "email": "ann@example.com"}
    assert placed["data"]["items"] == [{"productId": f"p-{run}", "name": "Pen", "quantity": 4,
                                        "unitPrice": "2.50", "lineTotal": "10.00", "stock": 6}]
    assert placed["data"]["totalAmount"] == "10.00"
    # state and events committed together; the relay marked them published
    assert await _count(stack["dsn"], "SELECT stock FROM products WHERE id=$1", f"p-{run}") == 6
    for _ in range(50):
        if not await _count(stack["dsn"], "SELECT count(*) FROM events WHERE published_at IS NULL"):
            break
        await asyncio.sleep(0.1)
    assert await _count(stack["dsn"], "SELECT count(*) FROM events WHERE published_at IS NULL") == 0


async def test_same_command_id_gives_same_reply_and_one_effect(stack):
    client, run = stack["client"], uuid.uuid4().hex[:8]
    cmd = {"commandId": f"cmd-{run}", "commandType": "AddProduct", **ADMIN,
           "data": {"productId": f"p-{run}", "name": "Ink", "price": "1", "stock": 1}}
    first = await client.send_command(cmd)
    again = await client.send_command({**cmd, "data": {"productId": f"other-{run}", "name": "X", "price": "9", "stock": 9}})
    concurrent = await asyncio.gather(*(client.send_command(cmd) for _ in range(5)))
    assert first["status"] == "accepted"
    assert again == first and all(r == first for r in concurrent)
    assert await _count(stack["dsn"], "SELECT count(*) FROM events WHERE aggregate_id=$1", f"p-{run}") == 1
    assert await _count(stack["dsn"], "SELECT count(*) FROM products WHERE id=$1", f"other-{run}") == 0


@pytest.mark.parametrize("body,routing_key,field", [
    (b"{not json", "RegisterCustomer", "body"),
    (b'"just a string"', "RegisterCustomer", "body"),
    (json.dumps({"commandId": "u1", "commandType": "FlyToMoon", "data": {}}).encode(), "FlyToMoon", "commandType"),
    (json.dumps({"commandId": "u2", "commandType": "AddProduct", "data": {}}).encode(), "RegisterCustomer", "commandType"),
    (json.dumps({"commandType": "AddProduct", "data": {"name": "x", "price": "1", "stock": 1}}).encode(), "AddProduct", "commandId"),
    (json.dumps({"commandId": "m1", "commandType": "AddProduct", **ADMIN, "data": {"name": "x", "stock": 1}}).encode(), "AddProduct", "data.price"),
    (json.dumps({"commandId": "m2", "commandType": "AddProduct", **ADMIN, "data": {"name": "x", "price": 2.5, "stock": 1}}).encode(), "AddProduct", "data.price"),
    (json.dumps({"commandId": "m3", "commandType": "AddProduct", **ADMIN, "data": {"name": "x", "price": "2.555", "stock": 1}}).encode(), "AddProduct", "data.price"),
    (b"x" * (1024 * 1024 + 1), "AddProduct", "body"),
    (json.dumps({"commandId": "e1", "commandType": "RegisterCustomer", **ADMIN, "data": {"name": "x", "email": "nope", "creditLimit": "1"}}).encode(), "RegisterCustomer", "data.email"),
    (json.dumps({"commandId": "e2", "commandType": "AddProduct", **ADMIN, "data": {"name": "x", "price": "1", "stock": -1}}).encode(), "AddProduct", "data.stock"),
    (json.dumps({"commandId": "e3", "commandType": "PlaceOrder", **ADMIN, "data": {"customerId": "c", "shippingAddress": {"street": "a", "city": "b", "state": "c", "zip": "d"},
                 "items": [{"productId": f"p{i}", "quantity": 1} for i in range(101)]}}).encode(), "PlaceOrder", "data.items"),
    (json.dumps({"commandId": "e4", "commandType": "PlaceOrder", **ADMIN, "data": {"customerId": "c", "shippingAddress": {"street": "a", "city": "b", "state": "c", "zip": "d"},
                 "items": [{"productId": "p", "quantity": 1}, {"productId": "p", "quantity": 2}]}}).encode(), "PlaceOrder", "data.items"),
    (json.dumps({"commandId": "e5", "commandType": "AddProduct", **ADMIN, "expectedVersion": 2, "data": {"name": "x", "price": "1", "stock": 1}}).encode(), "AddProduct", "expectedVersion"),
    (json.dumps({"commandId": "e6", "commandType": "AddProduct", **ADMIN, "data": {"name": "x", "price": "0", "stock": 1}}).encode(), "AddProduct", "data.price"),
])
async def test_bad_input_gets_validation_error_and_changes_nothing(stack, body, routing_key, field):
    before = await _count(stack["dsn"], "SELECT count(*) FROM events")
    reply = await stack["client"].call_raw("cqrs.commands", routing_key, body)
    assert reply["status"] == "rejected"
    assert reply["error"]["code"] == "validation_error"
    assert field in [d["field"] for d in reply["error"]["details"]], reply
    assert reply["version"] is None and reply["position"] is None
    assert await _count(stack["dsn"], "SELECT count(*) FROM events") == before
    assert await _count(stack["dsn"], "SELECT count(*) FROM products WHERE name = 'x'") == 0


async def test_unknown_type_reaches_service_through_alternate_exchange(stack):
    reply = await stack["client"].call_raw(
        "cqrs.commands", "NoSuchCommand", json.dumps({"commandId": f"n-{uuid.uuid4().hex}", "commandType": "NoSuchCommand", "data": {}}).encode())
    assert reply["error"]["code"] == "validation_error"


async def test_business_rejections(stack):
    client, run = stack["client"], uuid.uuid4().hex[:8]
    await client.send_command({"commandType": "RegisterCustomer", **ADMIN, "data": {
        "customerId": f"c-{run}", "name": "Bo", "email": "bo@example.com", "creditLimit": "10"}})
    await client.send_command({"commandType": "AddProduct", **ADMIN, "data": {"productId": f"p-{run}", "name": "Pen", "price": "4", "stock": 2}})

    async def order(qty, **extra):
        return await client.send_command({"commandType": "PlaceOrder", **{**ADMIN, **extra}, "data": {
            "customerId": f"c-{run}", "items": [{"productId": f"p-{run}", "quantity": qty}], "shippingAddress": ADDRESS}})

    assert (await order(3))["error"]["code"] == "insufficient_stock"
    assert (await order(2, userId="someone", metadata={"roles": ["customer"]}))["error"]["code"] == "forbidden"
    assert (await order(2, metadata={"roles": []}))["error"]["code"] == "forbidden"
    ok = await order(2, userId=f"c-{run}", metadata={"roles": ["customer"]})
    assert ok["status"] == "accepted"
    await client.send_command({"commandType": "AddProduct", **ADMIN, "data": {"productId": f"q-{run}", "name": "Cap", "price": "3", "stock": 5}})
    over = await client.send_command({"commandType": "PlaceOrder", **ADMIN, "data": {
        "customerId": f"c-{run}", "items": [{"productId": f"q-{run}", "quantity": 1}], "shippingAddress": ADDRESS}})
    assert over["error"]["code"] == "credit_limit_exceeded"  # 8.00 open + 3.00 > 10.00
    missing = await client.send_command({"commandType": "PlaceOrder", **ADMIN, "data": {
        "customerId": f"nobody-{run}", "items": [{"productId": f"p-{run}", "quantity": 1}], "shippingAddress": ADDRESS}})
    assert missing["error"]["code"] == "not_found"
    dup = await client.send_command({"commandType": "AddProduct", **ADMIN, "data": {"productId": f"p-{run}", "name": "Pen", "price": "4", "stock": 2}})
    assert dup["error"]["code"] == "duplicate" and dup["aggregateId"] == f"p-{run}"


async def test_a_rejected_command_id_keeps_its_rejection_when_it_could_now_succeed(stack):
    """Idempotency rests on the stored reply's key, not on a lookup first: a commandId that
    was rejected and is sent again after the rules would now accept it gets the stored
    rejection, and nothing it would have written remains."""
    client, run = stack["client"], uuid.uuid4().hex[:8]
    await client.send_command({"commandType": "RegisterCustomer", **ADMIN, "data": {
        "customerId": f"c-{run}", "name": "Di", "email": "di@example.com", "creditLimit": "1000"}})
    await client.send_command({"commandType": "AddProduct", **ADMIN, "data": {
        "productId": f"p-{run}", "name": "Mug", "price": "5", "stock": 1}})
    cmd = {"commandId": f"po-{run}", "commandType": "PlaceOrder", **ADMIN, "data": {
        "orderId": f"o-{run}", "customerId": f"c-{run}", "items": [{"productId": f"p-{run}", "quantity": 2}],
        "shippingAddress": ADDRESS}}
    first = await client.send_command(cmd)
    assert first["error"]["code"] == "insufficient_stock"
    restocked = await client.send_command({"commandType": "RestockProduct", **ADMIN, "data": {
        "productId": f"p-{run}", "quantity": 5}})
    assert restocked["status"] == "accepted"
    again = await client.send_command(cmd)
    assert again == first
    assert await _count(stack["dsn"], "SELECT count(*) FROM orders WHERE id = $1", f"o-{run}") == 0
    assert await _count(stack["dsn"], "SELECT stock FROM products WHERE id = $1", f"p-{run}") == 6
    assert await _count(stack["dsn"], "SELECT count(*) FROM events WHERE aggregate_id = $1", f"o-{run}") == 0
    # both deliveries are audited, each with the reply it got
    assert await _count(stack["dsn"], "SELECT count(*) FROM command_audit WHERE command_id = $1 "
                                      "AND status = 'rejected'", f"po-{run}") == 2


async def test_concurrent_orders_never_oversell(stack):
    client, run = stack["client"], uuid.uuid4().hex[:8]
    await client.send_command({"commandType": "RegisterCustomer", **ADMIN, "data": {
        "customerId": f"c-{run}", "name": "Cy", "email": "cy@example.com", "creditLimit": "100000"}})
    await client.send_command({"commandType": "AddProduct", **ADMIN, "data": {"productId": f"p-{run}", "name": "Hot", "price": "1", "stock": 10}})
    replies = await asyncio.gather(*(client.send_command({"commandType": "PlaceOrder", **ADMIN, "data": {
        "customerId": f"c-{run}", "items": [{"productId": f"p-{run}", "quantity": 1}], "shippingAddress": ADDRESS}})
        for _ in range(50)))
    assert sum(r["status"] == "accepted" for r in replies) == 10
    assert {r["error"]["code"] for r in replies if r["status"] == "rejected"} == {"insufficient_stock"}
    assert await _count(stack["dsn"], "SELECT stock FROM products WHERE id=$1", f"p-{run}") == 0
    positions = sorted(r["position"] for r in replies if r["status"] == "accepted")
    assert len(set(positions)) == 10


async def test_order_lifecycle_transitions_versions_and_stock(stack):
    client, run = stack["client"], uuid.uuid4().hex[:8]
    await client.send_command({"commandType": "RegisterCustomer", **ADMIN, "data": {
        "customerId": f"c-{run}", "name": "Di", "email": "di@example.com", "creditLimit": "1000"}})
    await client.send_command({"commandType": "AddProduct", **ADMIN, "data": {"productId": f"p-{run}", "name": "Mug", "price": "5", "stock": 4}})
    owner = {"userId": f"c-{run}", "metadata": {"roles": ["customer"]}}

    async def send(ctype, actor=ADMIN, **data):
        return await client.send_command({"commandType": ctype, **actor, **data.pop("_env", {}), "data": data})

    async def order():
        r = await send("PlaceOrder", owner, customerId=f"c-{run}", items=[{"productId": f"p-{run}", "quantity": 2}],
                       shippingAddress=ADDRESS)
        assert r["status"] == "accepted", r
        return r["aggregateId"]

    o1 = await order()
    assert (await send("DeliverOrder", orderId=o1))["error"]["code"] == "invalid_transition"
    assert (await send("ShipOrder", owner, orderId=o1, trackingNumber="T1"))["error"]["code"] == "forbidden"
    assert (await send("ShipOrder", orderId=o1, trackingNumber="T1", _env={"expectedVersion": 5}))["error"]["code"] == "concurrency_conflict"
    shipped = await send("ShipOrder", orderId=o1, trackingNumber=" T1 ", _env={"expectedVersion": 1})
    assert shipped["status"] == "accepted" and shipped["version"] == 2
    assert (await send("CancelOrder", owner, orderId=o1, reason="late"))["error"]["code"] == "invalid_transition"
    assert (await send("DeliverOrder", orderId=o1))["version"] == 3
    assert (await send("RefundOrder", owner, orderId=o1, reason="broken"))["error"]["code"] == "forbidden"
    assert (await send("RefundOrder", orderId=o1, reason="broken"))["version"] == 4
    assert (await send("RefundOrder", orderId=o1, reason="again"))["error"]["code"] == "invalid_transition"

    o2 = await order()
    assert await _count(stack["dsn"], "SELECT stock FROM products WHERE id=$1", f"p-{run}") == 0
    other = {"userId": "intruder", "metadata": {"roles": ["customer"]}}
    assert (await send("CancelOrder", other, orderId=o2, reason="x"))["error"]["code"] == "forbidden"
    assert (await send("CancelOrder", owner, orderId=f"none-{run}", reason="x"))["error"]["code"] == "not_found"
    cancelled = await send("CancelOrder", owner, orderId=o2, reason="changed my mind")
    assert cancelled["status"] == "accepted" and cancelled["version"] == 2
    assert await _count(stack["dsn"], "SELECT stock FROM products WHERE id=$1", f"p-{run}") == 2  # released

    restock = await send("RestockProduct", productId=f"p-{run}", quantity=3, _env={"expectedVersion": 1})
    assert restock["status"] == "accepted" and restock["version"] == 2  # reservations do not bump it
    assert (await send("RestockProduct", productId=f"p-{run}", quantity=3, _env={"expectedVersion": 1}))["error"]["code"] == "concurrency_conflict"
    assert (await send("RestockProduct", productId=f"p-{run}", quantity=0))["error"]["code"] == "validation_error"
    versions = await _count(stack["dsn"], "SELECT array_agg(version ORDER BY version) FROM events WHERE aggregate_id=$1", o1)
    assert versions == [1, 2, 3, 4]


async def test_wrong_content_type_is_a_validation_error(stack):
    body = json.dumps({"commandId": f"ct-{uuid.uuid4().hex}", "commandType": "AddProduct", **ADMIN,
                       "data": {"productId": "ct", "name": "x", "price": "1", "stock": 1}}).encode()
    reply = await stack["client"].call_raw("cqrs.commands", "AddProduct", body, content_type="text/plain")
    assert reply["error"]["code"] == "validation_error"
    assert reply["error"]["details"][0]["field"] == "content_type"
    assert await _count(stack["dsn"], "SELECT count(*) FROM products WHERE id='ct'") == 0


async def test_every_command_is_audited_with_who_what_and_outcome(stack):
    client, run = stack["client"], uuid.uuid4().hex[:8]
    ok = await client.send_command({"commandId": f"a1-{run}", "commandType": "AddProduct", **ADMIN,
                                    "data": {"productId": f"p-{run}", "name": "A", "price": "1", "stock": 1}})
    no = await client.send_command({"commandId": f"a2-{run}", "commandType": "AddProduct", "userId": "eve",
                                    "metadata": {"roles": ["customer"]},
                                    "data": {"productId": f"q-{run}", "name": "B", "price": "1", "stock": 1}})
    assert ok["status"] == "accepted" and no["error"]["code"] == "forbidden"
    conn = await asyncpg.connect(stack["dsn"])
    try:
        rows = await conn.fetch("SELECT command_id, command_type, user_id, roles, status, error_code, aggregate_id, received_at "
                                "FROM command_audit WHERE command_id = ANY($1::text[]) ORDER BY id", [f"a1-{run}", f"a2-{run}"])
    finally:
        await conn.close()
    assert [(r["command_id"], r["user_id"], r["roles"], r["status"], r["error_code"]) for r in rows] == [
        (f"a1-{run}", "admin-1", ["admin"], "accepted", None),
        (f"a2-{run}", "eve", ["customer"], "rejected", "forbidden"),
    ]
    assert all(r["command_type"] == "AddProduct" and r["received_at"] is not None for r in rows)


async def test_positions_are_gap_free_and_published_in_commit_order(stack):
    client, run = stack["client"], uuid.uuid4().hex[:8]
    # drain what earlier tests published
    while await stack["events"].get(no_ack=True, fail=False):
        pass
    await client.send_command({"commandType": "RegisterCustomer", **ADMIN, "data": {
        "customerId": f"c-{run}", "name": "Ed", "email": "ed@example.com", "creditLimit": "100000"}})
    products = [f"p{i}-{run}" for i in range(5)]
    for pid in products:
        await client.send_command({"commandType": "AddProduct", **ADMIN, "data": {"productId": pid, "name": "P", "price": "1", "stock": 1000}})
    await _events(stack["events"], 6)
    replies = await asyncio.gather(*(client.send_command({"commandType": "PlaceOrder", **ADMIN, "data": {
        "customerId": f"c-{run}", "items": [{"productId": products[i % 5], "quantity": 1}], "shippingAddress": ADDRESS}})
        for i in range(60)))
    assert all(r["status"] == "accepted" for r in replies)
    received = [e["position"] for _, e in await _events(stack["events"], 60, timeout=15)]
    assert received == sorted(received)  # a consumer never sees a position below one it has seen
    all_positions = await _count(stack["dsn"], "SELECT array_agg(position ORDER BY position) FROM events")
    assert all_positions == list(range(1, len(all_positions) + 1))  # no gaps


async def test_deadlocks_and_serialization_failures_are_retried_inside(pg_dsn):
    from command_service.adapters.postgres import PgCommandStore, create_pool

    pool = await create_pool(pg_dsn, 1, 2)
    calls = []

    async def work(tx):
        calls.append(1)
        await tx.conn.execute("INSERT INTO command_replies (command_id, reply) VALUES ($1, '{}')", f"w{len(calls)}")
        if len(calls) == 1:
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        if len(calls) == 2:
            raise asyncpg.exceptions.SerializationError("could not serialize access")
        return {"ok": len(calls)}

    try:
        assert await PgCommandStore(pool).in_transaction(work) == {"ok": 3}
        # the failed attempts were rolled back
        assert await pool.fetchval("SELECT array_agg(command_id) FROM command_replies WHERE command_id LIKE 'w_'") == ["w3"]
    finally:
        await pool.close()


async def test_error_precedence_follows_the_contract(stack):
    client, run = stack["client"], uuid.uuid4().hex[:8]
    await client.send_command({"commandType": "RegisterCustomer", **ADMIN, "data": {
        "customerId": f"c-{run}", "name": "Fay", "email": "fay@example.com", "creditLimit": "1"}})
    await client.send_command({"commandType": "AddProduct", **ADMIN, "data": {"productId": f"p-{run}", "name": "P", "price": "5", "stock": 0}})
    stranger = {"userId": "stranger", "metadata": {"roles": ["customer"]}}
    nobody = {"userId": "x", "metadata": {"roles": []}}

    async def place(actor, customer_id, qty=1, product=None):
        r = await client.send_command({"commandType": "PlaceOrder", **actor, "data": {
            "customerId": customer_id, "items": [{"productId": product or f"p-{run}", "quantity": qty}], "shippingAddress": ADDRESS}})
        return r["error"]["code"]

    assert await place(nobody, f"c-{run}", qty=0) == "validation_error"        # before forbidden
    assert await place(nobody, f"missing-{run}") == "forbidden"                # role alone before not_found
    assert await place(stranger, f"missing-{run}") == "not_found"              # before ownership
    assert await place(stranger, f"c-{run}") == "forbidden"                    # ownership before stock/credit
    assert await place(ADMIN, f"c-{run}") == "insufficient_stock"              # before credit limit
    await client.send_command({"commandType": "RestockProduct", **ADMIN, "data": {"productId": f"p-{run}", "quantity": 5}})
    assert await place(ADMIN, f"c-{run}") == "credit_limit_exceeded"


async def test_command_past_its_deadline_gets_unavailable_and_is_not_executed(stack):
    from datetime import datetime, timedelta, timezone

    run = uuid.uuid4().hex[:8]
    past = (datetime.now(timezone.utc) - timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    body = json.dumps({"commandId": f"d-{run}", "commandType": "AddProduct", **ADMIN,
                       "data": {"productId": f"p-{run}", "name": "Late", "price": "1", "stock": 1}}).encode()
    reply = await stack["client"].call_raw("cqrs.commands", "AddProduct", body, headers={"x-deadline": past})
    assert reply["status"] == "rejected" and reply["error"]["code"] == "unavailable"
    assert reply["commandId"] == f"d-{run}"
    assert await _count(stack["dsn"], "SELECT count(*) FROM products WHERE id=$1", f"p-{run}") == 0
    # not executed, so not stored either: the same commandId can be sent again
    again = await stack["client"].call_raw("cqrs.commands", "AddProduct", body)
    assert again["status"] == "accepted"


async def test_health_endpoints_report_ready_and_metrics(stack):
    app = stack["app"]
    port = app.health.port

    async def get(path):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        return int(data.split(b" ")[1]), data

    assert (await get("/livez"))[0] == 200
    status, body = await get("/readyz")
    assert status == 200, body
    assert (await get("/metrics"))[0] == 200
