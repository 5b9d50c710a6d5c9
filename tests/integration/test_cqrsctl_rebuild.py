"""`cqrsctl rebuild` against the real broker: the command service and two projector replicas
run in-process on the module's vhost and databases; cqrsctl talks AMQP only. The replica that
takes the request runs the rebuild and reports progress and the result; a second request
while it runs is refused; a requester that goes away does not stop the rebuild. The first two
tests run before the projectors start (the module's fixtures are created when first used)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

import aio_pika
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from typer.testing import CliRunner

from cqrs_client.cli import app as cqrsctl
from cqrs_shared.messaging.rpc import RpcClient
from cqrs_shared.topology import INTERNAL_EXCHANGE, REBUILD_REQUEST_ROUTING_KEY
from projector_service.config import ProjectorSettings
from projector_service.wiring import build as build_projector
from view_sets import CommandStack, assert_view_sets_equal

ADMIN = {"userId": "admin-1", "metadata": {"roles": ["admin"]}}
ADDRESS = {"street": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}
FAST = {"propagation_s": 1.2, "idle_s": 0.2}  # the processes' pointer TTL is 0.5 s
CQRSCTL = Path(sys.executable).with_name("cqrsctl")


class Stack(CommandStack):
    def __init__(self, client: RpcClient, db, url: str, projectors: list) -> None:
        super().__init__(client, db)
        self.url, self.projectors = url, projectors
        self.orders: list[str] = []

    async def pointer(self) -> dict:
        return await self.db.projector_state.find_one({"_id": "views"}) or {}


@pytest.fixture(scope="module")
async def stack(command_app, rabbit_vhost_url, mongo_url, mongo_db_name):
    from query_service.config import QuerySettings
    from query_service.wiring import build as build_query

    settings = ProjectorSettings(amqp_url=rabbit_vhost_url, mongo_url=mongo_url, mongo_db=mongo_db_name,
                                 rebuild_grace_seconds=1.0, rebuild_batch=500)
    projectors = [await build_projector(settings, rebuild_options=FAST) for _ in range(2)]  # two replicas
    query = await build_query(QuerySettings(amqp_url=rabbit_vhost_url, mongo_url=mongo_url, mongo_db=mongo_db_name))
    client = await RpcClient.connect(rabbit_vhost_url)
    mongo = AsyncIOMotorClient(mongo_url, tz_aware=True)
    s = Stack(client, mongo[mongo_db_name], rabbit_vhost_url, projectors)
    await s.command({"commandType": "RegisterCustomer", **ADMIN, "data": {
        "customerId": "c1", "name": "Ada", "email": "ada@example.com", "creditLimit": "1000000"}})
    await s.command({"commandType": "AddProduct", **ADMIN, "data": {
        "productId": "p1", "name": "Pen", "price": "1.25", "stock": 100000}})

    async def place(i: int) -> None:
        oid = f"o-{i}-{uuid.uuid4().hex[:6]}"
        await s.command({"commandType": "PlaceOrder", **ADMIN, "data": {
            "orderId": oid, "customerId": "c1", "shippingAddress": ADDRESS,
            "items": [{"productId": "p1", "quantity": 1 + i % 3}]}})
        s.orders.append(oid)

    for start in range(0, 120, 30):
        await asyncio.gather(*(place(i) for i in range(start, start + 30)))
    await s.settled()
    yield s
    await client.close()
    await query.stop()
    for p in projectors:
        await p.stop()
    mongo.close()


class _Requester:
    """A rebuild requester speaking AMQP directly (what cqrsctl does): publishes requests to
    cqrs.internal with direct reply-to and collects the JSON messages that come back."""

    def __init__(self, conn, exchange, got: asyncio.Queue) -> None:
        self.conn, self._exchange, self._got = conn, exchange, got

    @classmethod
    async def connect(cls, url: str) -> "_Requester":
        conn = await aio_pika.connect_robust(url)
        ch = await conn.channel()
        got: asyncio.Queue = asyncio.Queue()

        async def put(message) -> None:
            got.put_nowait(json.loads(message.body))

        await (await ch.get_queue("amq.rabbitmq.reply-to", ensure=False)).consume(put, no_ack=True)
        return cls(conn, await ch.get_exchange(INTERNAL_EXCHANGE, ensure=False), got)

    async def send(self, body: bytes, correlation_id: str) -> None:
        await self._exchange.publish(
            aio_pika.Message(body, correlation_id=correlation_id, reply_to="amq.rabbitmq.reply-to"),
            routing_key=REBUILD_REQUEST_ROUTING_KEY)

    async def next(self) -> dict:
        return await asyncio.wait_for(self._got.get(), 20)


def _invoke(*args: str):
    return CliRunner().invoke(cqrsctl, list(args), env={"COLUMNS": "200"})


async def test_on_a_vhost_where_no_projector_ever_ran_cqrsctl_says_so(rabbit_vhost_url):
    """Runs first: nothing is declared on the module's vhost yet."""
    r = await asyncio.to_thread(_invoke, "rebuild", "--amqp-url", rabbit_vhost_url)
    assert r.exit_code == 2 and "has projector-service ever started on this vhost" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output + r.stderr
    # the exchange exists (an older projector, or the command service alone) but no queue is bound
    conn = await aio_pika.connect_robust(rabbit_vhost_url)
    try:
        await (await conn.channel()).declare_exchange(INTERNAL_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
    finally:
        await conn.close()
    r = await asyncio.to_thread(_invoke, "rebuild", "--amqp-url", rabbit_vhost_url)
    assert r.exit_code == 2 and "no queue takes rebuild requests" in r.stderr, r.stderr


async def test_without_a_running_projector_the_request_is_not_taken_and_expires(rabbit_vhost_url):
    """The topology is declared (as any service does at start); no projector runs yet."""
    from cqrs_shared.messaging.topology import declare_all, declare_exchanges
    from cqrs_shared.topology import REBUILD_REQUEST_QUEUE

    conn = await aio_pika.connect_robust(rabbit_vhost_url)
    try:
        ch = await conn.channel()
        await declare_exchanges(ch)
        await declare_all(ch)
        r = await asyncio.to_thread(_invoke, "rebuild", "--amqp-url", rabbit_vhost_url, "--start-timeout", "1",
                                    "--json")
        assert r.exit_code == 2, r.output + r.stderr
        assert "no projector-service took the rebuild request within 1 s" in r.stderr, r.stderr
        assert json.loads(r.stdout) == {"type": "result", "status": "unavailable", "error": {
            "code": "unavailable", "message": r.stderr.strip().removeprefix("error: ")}}
        await asyncio.sleep(0.2)
        queue = await ch.declare_queue(REBUILD_REQUEST_QUEUE.name, durable=True, passive=True)
        assert queue.declaration_result.message_count == 0  # expired: the projectors started later ignore it
    finally:
        await conn.close()


async def test_rebuild_as_a_script_while_a_second_request_is_refused(stack):
    """--json in a process of its own; meanwhile a second cqrsctl rebuild is refused."""
    proc = await asyncio.create_subprocess_exec(
        str(CQRSCTL), "rebuild", "all", "--json", "--amqp-url", stack.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})
    lines: list[dict] = []
    try:
        while not any(m.get("type") == "progress" and m.get("viewSet") for m in lines):  # it holds the pointer
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line, (lines, await proc.stderr.read())
            lines.append(json.loads(line))
        second = await asyncio.to_thread(_invoke, "rebuild", "--amqp-url", stack.url)
        rest, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert second.exit_code == 3, second.output
    assert "rebuild refused" in second.stderr and "being rebuilt by" in second.stderr, second.stderr

    assert proc.returncode == 0, stderr.decode()
    lines += [json.loads(x) for x in rest.decode().splitlines()]  # every line is one JSON object
    assert lines[0]["type"] == "accepted" and lines[0]["instance"]
    progress = [m for m in lines if m["type"] == "progress"]
    assert {m["phase"] for m in progress} >= {"replay", "verify"}
    assert all(set(m) >= {"phase", "viewSet", "applied", "watermark", "target", "rate", "elapsed"} for m in progress)
    result = lines[-1]
    assert [m["type"] for m in lines].count("result") == 1
    assert result["status"] == "switched" and result["viewSet"] == "r1" and result["previous"] == ""
    assert result["applied"] >= len(stack.orders) and result["watermark"] >= stack.position

    pointer = await stack.pointer()
    assert pointer["live"] == "r1" and pointer["building"] is None
    await assert_view_sets_equal(stack.db, "", "r1")
    reply = await stack.settled()
    assert reply["result"]["total"] == len(stack.orders)


async def test_rebuild_shows_progress_and_switches(stack):
    result = await asyncio.to_thread(_invoke, "rebuild", "--amqp-url", stack.url, "--grace", "1")
    assert result.exit_code == 0, result.output + result.stderr
    assert "rebuild accepted by projector" in result.stderr
    progress = [x for x in result.stderr.splitlines() if x.startswith("rebuild set r2 [")]
    assert any("[replay]" in x for x in progress) and any("[verify]" in x for x in progress), result.stderr
    assert result.stdout.startswith("switched: set r2 is live (was r1);"), result.stdout
    assert (await stack.pointer())["live"] == "r2"
    await assert_view_sets_equal(stack.db, "r1", "r2")
    reply = await stack.settled()
    assert reply["result"]["total"] == len(stack.orders)


async def test_the_rebuild_finishes_when_its_requester_goes_away(stack):
    before = (await stack.pointer())["live"]
    requester = await _Requester.connect(stack.url)
    await requester.send(b'{"views": "all"}', "c1")
    assert (await requester.next())["type"] == "accepted"
    while (m := await requester.next())["type"] != "progress" or not m["viewSet"]:
        pass
    await requester.conn.close()  # Ctrl-C / lost connection of the requester
    for _ in range(300):
        pointer = await stack.pointer()
        if pointer["live"] != before and pointer["building"] is None:
            break
        await asyncio.sleep(0.1)
    assert pointer["live"] == m["viewSet"] != before, pointer
    await asyncio.sleep(1.5)  # verify phase: the new set is complete
    await assert_view_sets_equal(stack.db, before, pointer["live"])
    for _ in range(100):  # the replica's rebuild task has ended
        if not any(p.rebuilds.running for p in stack.projectors):
            break
        await asyncio.sleep(0.1)
    assert not any(p.rebuilds.running for p in stack.projectors)


async def test_an_invalid_request_is_rejected_and_changes_nothing(stack):
    before = await stack.pointer()
    requester = await _Requester.connect(stack.url)
    try:
        for body in (b'{"views": "orders"}', b"not json"):
            await requester.send(body, "c2")
            reply = await requester.next()
            assert reply["type"] == "result" and reply["status"] == "rejected", reply
            assert reply["error"]["code"] == "validation_error"
    finally:
        await requester.conn.close()
    assert (await stack.pointer())["generation"] == before["generation"]


async def test_a_replica_stopped_mid_rebuild_abandons_it_and_tells_the_requester(stack):
    """Runs last: stops the replica that took the request (SIGTERM, e.g. a rolling update)."""
    before = await stack.pointer()
    requester = await _Requester.connect(stack.url)
    try:
        await requester.send(b"{}", "c3")
        while (m := await requester.next())["type"] != "progress" or not m["viewSet"]:
            pass
        (running,) = [p for p in stack.projectors if p.rebuilds.running]
        await running.stop()
        stack.projectors.remove(running)
        while (m := await requester.next())["type"] != "result":
            pass
    finally:
        await requester.conn.close()
    assert m["status"] == "failed" and m["error"]["code"] == "rebuild_failed", m
    assert "is stopping" in m["error"]["message"] and "the live views are unchanged" in m["error"]["message"]
    after = await stack.pointer()
    assert after["live"] == before["live"] and after["building"] is None  # abandoned, live views untouched
    reply = await stack.settled()
    assert reply["result"]["total"] == len(stack.orders)
