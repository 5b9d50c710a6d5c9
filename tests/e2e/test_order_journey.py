"""End to end across three processes: command -> outbox -> relay -> cqrs.events ->
projector -> MongoDB view -> query service, including crashes around the outbox."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid

import asyncpg
import pytest

from cqrs_shared.messaging.rpc import RpcClient
from procs import BIN, Service

pytestmark = pytest.mark.e2e

ADMIN = {"userId": "admin-e2e", "metadata": {"roles": ["admin"]}}
ADDRESS = {"street": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}


@pytest.fixture(scope="module")
def services(rabbit_vhost_url, pg_dsn, mongo_url, mongo_db_name, tmp_path_factory):
    env = {**os.environ, "AMQP_URL": rabbit_vhost_url, "POSTGRES_DSN": pg_dsn, "MONGO_URL": mongo_url,
           "MONGO_DB": mongo_db_name, "RELAY_POLL_SECONDS": "0.2"}
    logdir = tmp_path_factory.mktemp("e2e-logs")
    svc = {n: Service(n, env, logdir) for n in ("command-service", "projector-service", "query-service")}
    for s in svc.values():
        s.start()
    yield svc
    for s in svc.values():
        s.terminate()


@pytest.fixture
async def client(services, rabbit_vhost_url):
    c = await RpcClient.connect(rabbit_vhost_url)
    yield c
    await c.close()


async def _setup_customer_and_product(client, run):
    await client.send_command({"commandType": "RegisterCustomer", **ADMIN, "data": {
        "customerId": f"c-{run}", "name": "Grace Hopper", "email": "grace@example.com", "creditLimit": "1000"}})
    await client.send_command({"commandType": "AddProduct", **ADMIN, "data": {
        "productId": f"p-{run}", "name": "Compiler", "price": "19.99", "stock": 50}})


def _place(run, order_id):
    return {"commandType": "PlaceOrder", "userId": f"c-{run}", "metadata": {"roles": ["customer"]},
            "data": {"orderId": order_id, "customerId": f"c-{run}",
                     "items": [{"productId": f"p-{run}", "quantity": 3}], "shippingAddress": ADDRESS}}


async def test_command_to_view_to_query_across_three_processes(client):
    run = uuid.uuid4().hex[:8]
    await _setup_customer_and_product(client, run)
    placed = await client.send_command(_place(run, f"o-{run}"))
    assert placed["status"] == "accepted", placed
    reply = await client.query({"queryType": "GetOrderDetails", "minPosition": placed["position"],
                                "parameters": {"orderId": f"o-{run}", "includeHistory": True}})
    assert reply["status"] == "ok", reply
    assert reply["position"] >= placed["position"]
    view = reply["result"]
    assert view["id"] == f"o-{run}" and view["status"] == "placed" and view["version"] == 1
    assert view["customer"] == {"id": f"c-{run}", "name": "Grace Hopper", "email": "grace@example.com"}
    assert view["items"] == [{"productId": f"p-{run}", "name": "Compiler", "quantity": 3,
                              "unitPrice": "19.99", "lineTotal": "59.97"}]
    assert view["totalAmount"] == "59.97" and view["shippingAddress"] == ADDRESS
    assert view["shippedAt"] is None and view["trackingNumber"] is None
    assert view["history"] == [{"status": "placed", "at": view["placedAt"], "by": f"c-{run}"}]


async def test_command_service_logs_are_json_lines_with_correlation(services, client):
    import json

    run = uuid.uuid4().hex[:8]
    reply = await client.send_command({"commandType": "AddProduct", "userId": "admin-e2e",
                                       "metadata": {"roles": ["admin"], "correlationId": f"corr-{run}"},
                                       "data": {"productId": f"log-{run}", "name": "Log", "price": "1", "stock": 1}})
    await asyncio.sleep(0.2)
    lines = [json.loads(x) for x in services["command-service"].log.read_text().splitlines() if x.startswith("{")]
    mine = [x for x in lines if x.get("commandId") == reply["commandId"]]
    assert mine, "no log line carries the commandId"
    assert all(x["correlationId"] == f"corr-{run}" and x["service"] == "command-service" for x in mine)
    assert any(x.get("status") == "accepted" for x in mine)


async def _unpublished(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM events WHERE published_at IS NULL")
    finally:
        await conn.close()


async def _wait_published(dsn, timeout=10.0):
    for _ in range(int(timeout / 0.05)):
        if await _unpublished(dsn) == 0:
            return
        await asyncio.sleep(0.05)
    assert await _unpublished(dsn) == 0


async def test_event_committed_but_not_published_arrives_once_after_restart(services, client, pg_dsn):
    """The command service dies (kill -9) after the commit and before publishing."""
    run = uuid.uuid4().hex[:8]
    await _setup_customer_and_product(client, run)
    await _wait_published(pg_dsn)  # the setup's events are out before the relay is switched off
    cmd = services["command-service"]
    assert cmd.terminate() == 0  # graceful stop
    cmd.start(RELAY_ENABLED="false")  # commits and replies, never publishes
    placed = await client.send_command(_place(run, f"o-{run}"))
    assert placed["status"] == "accepted"
    assert await _unpublished(pg_dsn) == 1
    cmd.kill9()
    stale = await client.query({"queryType": "GetOrderDetails", "minPosition": placed["position"], "maxWaitMs": 300,
                                "parameters": {"orderId": f"o-{run}"}})
    assert stale["status"] == "error" and stale["error"]["code"] == "stale"
    cmd.start()
    reply = await client.query({"queryType": "GetOrderDetails", "minPosition": placed["position"], "maxWaitMs": 10000,
                                "parameters": {"orderId": f"o-{run}", "includeHistory": True}})
    assert reply["status"] == "ok", reply
    assert reply["result"]["version"] == 1 and len(reply["result"]["history"]) == 1
    await _wait_published(pg_dsn)  # marked published after the confirms; the view can be seen first


async def test_crash_after_publish_before_marking_gives_one_effect(services, client, pg_dsn):
    """Published but not marked: the restarted relay publishes again, the view stays exact."""
    run = uuid.uuid4().hex[:8]
    await _setup_customer_and_product(client, run)
    cmd = services["command-service"]
    cmd.terminate()
    cmd.start(RELAY_ENABLED="false")
    placed = await client.send_command(_place(run, f"o-{run}"))
    cmd.terminate()
    # start with the fault: it publishes the backlog, then exits before marking it
    cmd.starts += 1
    log = cmd.logdir / f"command-service.{cmd.starts}.log"
    proc = subprocess.Popen([str(BIN / "command-service"), "serve"], env={**cmd.env, "RELAY_CRASH_AFTER_PUBLISH": "true"},
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    assert proc.wait(30) == 17, log.read_text()
    assert await _unpublished(pg_dsn) >= 1  # still unmarked
    first = await client.query({"queryType": "GetOrderDetails", "minPosition": placed["position"], "maxWaitMs": 10000,
                                "parameters": {"orderId": f"o-{run}", "includeHistory": True}})
    assert first["status"] == "ok", first
    cmd.start()  # publishes the same events again
    await _wait_published(pg_dsn)
    await asyncio.sleep(0.5)  # let the projector see the duplicates
    again = await client.query({"queryType": "GetOrderDetails", "parameters": {"orderId": f"o-{run}", "includeHistory": True}})
    assert again["result"] == first["result"]
    assert again["result"]["version"] == 1 and len(again["result"]["history"]) == 1


async def test_sigterm_stops_every_service_cleanly(services):
    for name in ("query-service", "projector-service", "command-service"):
        s = services[name]
        assert s.terminate() == 0, s.log.read_text()
        s.start()


async def test_projector_catches_up_on_history_it_never_received(services, client, rabbit_vhost_url, mongo_url):
    """Views that start empty (new database) catch up from the event store over RabbitMQ."""
    run = uuid.uuid4().hex[:8]
    await _setup_customer_and_product(client, run)
    placed = await client.send_command(_place(run, f"o-{run}"))
    proj = services["projector-service"]
    proj.terminate()
    fresh_db = f"fresh_{run}"
    proj.start(MONGO_DB=fresh_db)
    try:
        from motor.motor_asyncio import AsyncIOMotorClient

        mongo = AsyncIOMotorClient(mongo_url)
        for _ in range(200):
            doc = await mongo[fresh_db]["orders"].find_one({"_id": f"o-{run}"})
            state = await mongo[fresh_db]["projector_state"].find_one({"_id": "watermark"})
            if doc and state and state["position"] >= placed["position"]:
                break
            await asyncio.sleep(0.05)
        mongo.close()
        assert doc is not None and doc["version"] == 1
        assert state["position"] >= placed["position"]  # every earlier position was replayed
    finally:
        proj.terminate()
        proj.start()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", ["command-service", "projector-service", "query-service"])
async def test_every_service_serves_liveness_readiness_and_metrics(services, name):
    """An extra replica of each service, with a known health port."""
    import urllib.request

    port = _free_port()
    extra = Service(name, {**services[name].env, "HEALTH_PORT": str(port)}, services[name].logdir).start()
    try:
        for path in ("/livez", "/readyz", "/metrics"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                assert resp.status == 200, path
                body = resp.read().decode()
            if path == "/readyz":
                assert '"ready": true' in body or '"ready":true' in body, body
    finally:
        assert extra.terminate() == 0
