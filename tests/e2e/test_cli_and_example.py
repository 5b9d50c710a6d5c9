"""cqrsctl and the plain-pika example as subprocesses against the three services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from procs import BIN, Service

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "pika_order_example.py"


@pytest.fixture(scope="module")
def env(rabbit_vhost_url, pg_dsn, mongo_url, mongo_db_name, tmp_path_factory):
    env = {**os.environ, "AMQP_URL": rabbit_vhost_url, "POSTGRES_DSN": pg_dsn, "MONGO_URL": mongo_url,
           "MONGO_DB": mongo_db_name, "RELAY_POLL_SECONDS": "0.2"}
    logdir = tmp_path_factory.mktemp("cli-logs")
    svc = [Service(n, env, logdir).start() for n in ("command-service", "projector-service", "query-service")]
    yield env
    for s in svc:
        s.terminate()


def cqrsctl(env, *args, timeout=60):
    return subprocess.run([str(BIN / "cqrsctl"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_command_query_and_errors(env, tmp_path):
    run = uuid.uuid4().hex[:8]
    r = cqrsctl(env, "command", "AddProduct", "--data", json.dumps(
        {"productId": f"p-{run}", "name": "Lamp", "price": "9.99", "stock": 5}), "--user-id", "admin", "--role", "admin", "--json")
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    assert added["status"] == "accepted" and added["aggregateId"] == f"p-{run}"

    r = cqrsctl(env, "command", "RegisterCustomer", "--data", json.dumps(
        {"customerId": f"c-{run}", "name": "Lin", "email": "lin@example.com", "creditLimit": "100"}),
        "-u", "admin", "-r", "admin", "--json")
    assert r.returncode == 0, r.stderr
    data_file = tmp_path / "order.json"
    data_file.write_text(json.dumps({"orderId": f"o-{run}", "customerId": f"c-{run}",
                                     "items": [{"productId": f"p-{run}", "quantity": 2}],
                                     "shippingAddress": {"street": "1 A St", "city": "B", "state": "C", "zip": "1"}}))
    r = cqrsctl(env, "command", "PlaceOrder", "--data", f"@{data_file}", "-u", f"c-{run}", "-r", "customer", "--json")
    assert r.returncode == 0, r.stderr
    placed = json.loads(r.stdout)

    r = cqrsctl(env, "query", "GetOrderDetails", "--param", f"orderId=o-{run}", "--param", "includeHistory=true",
                "--min-position", str(placed["position"]), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    reply = json.loads(r.stdout)
    assert reply["position"] >= placed["position"]
    assert reply["result"]["totalAmount"] == "19.98" and len(reply["result"]["history"]) == 1

    # human output, and a rejection: exit 1 with the code on stderr
    r = cqrsctl(env, "query", "GetOrderDetails", "-p", f"orderId=o-{run}")
    assert r.returncode == 0 and "Lamp" in r.stdout
    r = cqrsctl(env, "query", "GetOrderDetails", "-p", f"orderId=missing-{run}")
    assert r.returncode == 1 and "not_found" in r.stderr
    r = cqrsctl(env, "command", "AddProduct", "--data", json.dumps(
        {"productId": f"p-{run}", "name": "Lamp", "price": "9.99", "stock": 5}), "-u", "admin", "-r", "admin")
    assert r.returncode == 1 and "duplicate" in r.stderr and "Traceback" not in r.stderr
    r = cqrsctl(env, "command", "AddProduct", "--data", '{"name": "x", "price": 2.5, "stock": 1}',
                "-u", "admin", "-r", "admin", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["details"][0]["field"] == "data.price"


def test_events_tail_prints_events_live(env):
    run = uuid.uuid4().hex[:8]
    tail = subprocess.Popen([str(BIN / "cqrsctl"), "events", "tail", "--pattern", "product.*", "--count", "1", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert tail.stderr.readline().strip() == "ready"
        r = cqrsctl(env, "command", "AddProduct", "--data", json.dumps(
            {"productId": f"t-{run}", "name": "Tail", "price": "1", "stock": 1}), "-u", "admin", "-r", "admin")
        assert r.returncode == 0, r.stderr
        out, _ = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
    ev = json.loads(out.splitlines()[0])
    assert ev["eventType"] == "ProductAdded" and ev["aggregateId"] == f"t-{run}"


def test_pika_example_runs_the_order_scenario(env):
    r = subprocess.run([sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    assert [json.loads(lines[k])["status"] for k in ("RegisterCustomer", "AddProduct", "PlaceOrder")] == ["accepted"] * 3
    details = json.loads(lines["GetOrderDetails"])
    assert details["status"] == "ok" and details["result"]["status"] == "placed"
    assert details["result"]["totalAmount"] == "25.00"


def test_unreachable_broker_gives_one_line_and_exit_2():
    env = {**os.environ, "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}
    r = cqrsctl(env, "query", "GetOrderDetails", "-p", "orderId=x")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "cannot reach RabbitMQ" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


async def test_live_traffic_matches_the_asyncapi_document(env):
    """Every reply and event the running services produce conforms to docs/asyncapi.yaml (and the
    client's typed command and query models work end to end)."""
    import asyncio

    import aio_pika
    from asyncapi_support import errors

    from cqrs_client import CqrsClient, command_body, query_body
    from cqrs_shared.contracts import commands as c
    from cqrs_shared.contracts import queries as q

    run = uuid.uuid4().hex[:8]
    cust, pen, o1, o2 = f"c-{run}", f"pen-{run}", f"o1-{run}", f"o2-{run}"
    admin = {"user_id": "admin", "roles": ["admin"]}
    address = c.Address(street="1 Main St", city="Town", state="TS", zip="1")
    problems: list[str] = []

    conn = await aio_pika.connect_robust(env["AMQP_URL"])
    events: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with conn, CqrsClient(env["AMQP_URL"]) as client:
        ch = await conn.channel()
        ex = await ch.declare_exchange("cqrs.events", aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await ch.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(ex, "#")

        async def collect(m):
            events.append(m)

        await queue.consume(collect, no_ack=True)

        async def command(model, user=admin, **kw):
            ctype = type(model).__name__
            body = command_body(ctype, model.model_dump(mode="json", exclude_none=True), **user, **kw)
            reply = await client.call("cqrs.commands", ctype, body, timeout=30)
            problems.extend(f"{ctype} reply: {p}" for p in errors("CommandReply", reply))
            return reply

        replies = [
            await command(c.RegisterCustomer(customerId=cust, name="Ada", email="ada@example.com", creditLimit="500")),
            await command(c.AddProduct(productId=pen, name="Pen", price="2.50", stock=10)),
            await command(c.RestockProduct(productId=pen, quantity=5)),
            await command(c.PlaceOrder(orderId=o1, customerId=cust, items=[c.OrderItem(productId=pen, quantity=2)],
                                       shippingAddress=address), {"user_id": cust, "roles": ["customer"]}),
            await command(c.ShipOrder(orderId=o1, trackingNumber="T1")),
            await command(c.DeliverOrder(orderId=o1)),
            await command(c.RefundOrder(orderId=o1, reason="broken")),
            await command(c.PlaceOrder(orderId=o2, customerId=cust, items=[c.OrderItem(productId=pen, quantity=1)],
                                       shippingAddress=address)),
            await command(c.CancelOrder(orderId=o2, reason="changed my mind")),
        ]
        assert [r["status"] for r in replies] == ["accepted"] * len(replies), replies
        rejected = await command(c.AddProduct(productId=pen, name="Pen", price="2.50", stock=10))
        assert rejected["error"]["code"] == "duplicate"
        invalid = await client.call("cqrs.commands", "AddProduct", {"commandId": run, "commandType": "AddProduct",
                                                                    "data": {"price": 1}}, timeout=30)
        assert invalid["error"]["code"] == "validation_error" and not errors("CommandReply", invalid)

        last = max(r["position"] for r in replies)
        typed = await client.query(q.GetOrderDetails(orderId=o1, includeHistory=True), min_position=last)
        day = typed["result"]["placedAt"][:10]
        queries = [
            q.GetOrderDetails(orderId=o1, includeHistory=True), q.GetOrderDetails(orderId=o2),
            q.ListCustomerOrders(customerId=cust), q.SearchOrders(text=run, pageSize=5),
            q.GetCustomerSummary(customerId=cust), q.GetDailyOrderMetrics(dateFrom=day, dateTo=day),
            q.GetPopularProducts(dateFrom=day, dateTo=day), q.GetProductAvailability(productId=pen),
        ]
        for model in queries:
            qtype = type(model).__name__
            reply = await client.call("cqrs.queries", qtype, query_body(qtype, q.parameters_of(model),
                                                                        min_position=last), timeout=30)
            assert reply["status"] == "ok", reply
            problems.extend(f"{qtype} reply: {p}" for p in errors(f"{qtype}Reply", reply))
        for qtype, params, extra, code in [("GetOrderDetails", {"orderId": f"none-{run}"}, {}, "not_found"),
                                           ("GetProductAvailability", {"productId": pen},
                                            {"min_position": last + 10**9, "max_wait_ms": 0}, "stale")]:
            reply = await client.call("cqrs.queries", qtype, query_body(qtype, params, **extra), timeout=30)
            assert reply["error"]["code"] == code, reply
            problems.extend(f"{qtype} {code} reply: {p}" for p in errors(f"{qtype}Reply", reply))

        mine = {cust, pen, o1, o2}
        for _ in range(300):
            if {m.type for m in events if m.headers.get("x-aggregate-id") in mine} >= {
                    "CustomerRegistered", "ProductAdded", "ProductRestocked", "OrderPlaced", "OrderShipped",
                    "OrderDelivered", "OrderRefunded", "OrderCancelled"}:
                break
            await asyncio.sleep(0.1)
        seen = set()
        for m in events:
            if m.headers.get("x-aggregate-id") not in mine:
                continue
            body = json.loads(m.body)
            seen.add(body["eventType"])
            assert m.message_id == body["eventId"] and m.type == body["eventType"]
            assert m.routing_key == f"{body['aggregateType']}.{body['eventType']}"
            problems.extend(f"{m.type} event: {p}" for p in errors(f"{m.type}Event", body, dict(m.headers)))
        assert len(seen) == 8, seen
    assert problems == []
