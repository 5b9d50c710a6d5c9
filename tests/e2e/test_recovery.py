"""Recovery: the three services, as processes, on PRIVATE RabbitMQ, PostgreSQL and MongoDB
(nx-27017) instances that these tests stop and start again while commands and queries flow.

RabbitMQ is stopped cleanly, PostgreSQL stopped in `immediate` mode (like a crash), the
MongoDB stand-in killed (SIGKILL). For each: the services that use the server report
not-ready (/readyz 503) while it is down and ready again after, they recover by themselves
(no service is restarted),
every command sent is finally answered `accepted`, and nothing accepted is lost: each
accepted command's event is in PostgreSQL, published, and applied to the views exactly once.
SIGTERM under load: each service exits 0 within a bounded time, having finished and
acknowledged what it held (no command is received twice), and nothing is lost.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
import pytest

from cqrs_shared.messaging.rpc import RpcClient
from procs import Service
from servers import parallel, free_port, private_servers  # noqa: F401

pytestmark = pytest.mark.e2e

NAMES = ("command-service", "projector-service", "query-service")
ADMIN = {"userId": "admin-recovery", "metadata": {"roles": ["admin"]}}
ADDRESS = {"street": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}
MONGO_DB = "views"
SIGTERM_BOUND_S = 20.0  # what a Kubernetes terminationGracePeriodSeconds of 30 leaves room for


@dataclass
class Stack:
    rabbit: object
    postgres: object
    mongo: object
    dsn: str
    services: dict[str, Service]
    health: dict[str, int]


@pytest.fixture(scope="module")
def stack(private_servers, tmp_path_factory):  # noqa: F811
    from command_service.adapters.postgres import apply_migrations, ensure_database

    private_rabbit, private_postgres, private_mongo = private_servers

    dsn = private_postgres.dsn("cqrs")
    asyncio.run(ensure_database(dsn))
    apply_migrations(dsn)
    health = {n: free_port() for n in NAMES}
    env = {**os.environ, "AMQP_URL": private_rabbit.url, "POSTGRES_DSN": dsn, "MONGO_URL": private_mongo.url,
           "MONGO_DB": MONGO_DB, "RELAY_POLL_SECONDS": "0.2"}
    logdir = tmp_path_factory.mktemp("recovery-logs")
    services = {n: Service(n, {**env, "HEALTH_PORT": str(health[n])}, logdir) for n in NAMES}
    parallel(*(s.start for s in services.values()))
    yield Stack(private_rabbit, private_postgres, private_mongo, dsn, services, health)
    for s in services.values():
        s.terminate()


# ---- load --------------------------------------------------------------------------------

@dataclass
class Load:
    """Workers that send commands one after the other, each resent with the same commandId
    until it is answered (a reply can be lost with the connection that carried it), and a
    worker that sends queries."""

    client: RpcClient
    customer: str
    product: str
    run: str
    request_timeout: float = 3.0
    workers: int = 4
    sent: dict[str, dict] = field(default_factory=dict)
    replies: dict[str, dict] = field(default_factory=dict)
    answered_at: dict[str, float] = field(default_factory=dict)
    resends: int = 0
    queries_ok: list[float] = field(default_factory=list)
    queries_failed: int = 0

    def __post_init__(self) -> None:
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._n = 0

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._commands()) for _ in range(self.workers)]
        self._tasks.append(asyncio.create_task(self._queries()))

    async def stop(self, timeout: float = 60.0) -> None:
        self._stopping.set()
        done, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for t in pending:
            t.cancel()
        for t in done:
            t.result()
        assert not pending, (f"{len(set(self.sent) - set(self.replies))} command(s) still unanswered "
                             f"{timeout:.0f}s after the load stopped")

    def _next(self) -> dict:
        self._n += 1
        n = self._n
        if n % 3 == 0:
            data = {"productId": f"p-{self.run}-{n}", "name": f"Thing {n}", "price": "1.50", "stock": 5}
            return {"commandId": f"cmd-{self.run}-{n}", "commandType": "AddProduct", **ADMIN, "data": data}
        return {"commandId": f"cmd-{self.run}-{n}", "commandType": "PlaceOrder", "userId": self.customer,
                "metadata": {"roles": ["customer"]},
                "data": {"orderId": f"o-{self.run}-{n}", "customerId": self.customer,
                         "items": [{"productId": self.product, "quantity": 1}], "shippingAddress": ADDRESS}}

    async def _commands(self) -> None:
        while not self._stopping.is_set():
            cmd = self._next()
            self.sent[cmd["commandId"]] = cmd
            reply = await self._until_answered(cmd)
            self.replies[cmd["commandId"]] = reply
            self.answered_at[cmd["commandId"]] = time.monotonic()

    async def _until_answered(self, cmd: dict) -> dict:
        first = True
        while True:
            if not first:
                self.resends += 1
            first = False
            try:
                return await self.client.send_command(cmd, timeout=self.request_timeout)
            except asyncio.CancelledError:
                raise
            except Exception:  # no reply in time, or the broker is away: send it again
                await asyncio.sleep(0.2)

    async def _queries(self) -> None:
        while not self._stopping.is_set():
            try:
                r = await self.client.query({"queryType": "GetProductAvailability",
                                             "parameters": {"productId": self.product}}, timeout=2)
                if r["status"] == "ok":
                    self.queries_ok.append(time.monotonic())
                else:
                    self.queries_failed += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                self.queries_failed += 1
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.05)

    def accepted(self) -> dict[str, dict]:
        return {cid: r for cid, r in self.replies.items() if r.get("status") == "accepted"}


async def _setup(client: RpcClient, run: str) -> tuple[str, str]:
    customer, product = f"c-{run}", f"stock-{run}"
    r1 = await client.send_command({"commandType": "RegisterCustomer", **ADMIN, "data": {
        "customerId": customer, "name": "Load", "email": "load@example.com", "creditLimit": "100000000"}})
    r2 = await client.send_command({"commandType": "AddProduct", **ADMIN, "data": {
        "productId": product, "name": "Widget", "price": "1.00", "stock": 1_000_000}})
    assert r1["status"] == r2["status"] == "accepted", (r1, r2)
    return customer, product


# ---- readiness -----------------------------------------------------------------------------

async def _readyz(port: int) -> int:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 3)
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        return int(status.split()[1])
    except (OSError, asyncio.TimeoutError, IndexError, ValueError):
        return 0  # not answering at all


class Readiness:
    """Polls /readyz of every service, keeping (time, status) per service."""

    def __init__(self, health: dict[str, int]) -> None:
        self.health = health
        self.seen: dict[str, list[tuple[float, int]]] = {n: [] for n in health}
        self._task: asyncio.Task | None = None

    async def _poll(self) -> None:
        while True:
            for name, port in self.health.items():
                self.seen[name].append((time.monotonic(), await _readyz(port)))
            await asyncio.sleep(0.2)

    def __enter__(self) -> "Readiness":
        self._task = asyncio.get_event_loop().create_task(self._poll())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def statuses(self, name: str, start: float, end: float) -> set[int]:
        return {code for t, code in self.seen[name] if start <= t <= end}

    async def all_ready(self, timeout: float = 90.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            codes = [await _readyz(p) for p in self.health.values()]
            if all(c == 200 for c in codes):
                return time.monotonic()
            await asyncio.sleep(0.2)
        raise AssertionError(f"not every service ready again within {timeout}s: {self.last()}")

    def last(self) -> dict[str, int]:
        return {n: (v[-1][1] if v else None) for n, v in self.seen.items()}


# ---- checks ------------------------------------------------------------------------------

async def _wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (waited {timeout}s)")
        await asyncio.sleep(0.2)


async def verify_nothing_lost(stack: Stack, load: Load) -> dict[str, int]:
    """Every command sent was answered accepted; its event is stored, published once and
    applied to the views exactly once."""
    from motor.motor_asyncio import AsyncIOMotorClient

    unanswered = set(load.sent) - set(load.replies)
    assert not unanswered, f"{len(unanswered)} command(s) never answered"
    not_accepted = {cid: r for cid, r in load.replies.items() if r.get("status") != "accepted"}
    assert not not_accepted, f"rejected: {list(not_accepted.values())[:3]}"
    accepted = load.accepted()
    conn = await asyncpg.connect(stack.dsn)
    mongo = AsyncIOMotorClient(stack.mongo.url)
    try:
        rows = await conn.fetch("SELECT position, aggregate_id, event_type, causation FROM ("
                                "SELECT position, aggregate_id, event_type, envelope->>'causationId' AS causation "
                                "FROM events) e WHERE causation = ANY($1::text[])", list(accepted))
        by_command = Counter(r["causation"] for r in rows)
        assert set(by_command) == set(accepted), "accepted command(s) without an event in PostgreSQL"
        assert set(by_command.values()) == {1}, "a command's event was stored more than once"
        for r in rows:
            reply = accepted[r["causation"]]
            assert (r["position"], r["aggregate_id"]) == (reply["position"], reply["aggregateId"])
        await _wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM events WHERE published_at IS NULL"),
                        "every stored event published")
        last = await conn.fetchval("SELECT max(position) FROM events")
        db = mongo[MONGO_DB]

        async def caught_up():
            doc = await db["projector_state"].find_one({"_id": "watermark"})
            return doc is not None and doc["position"] >= last

        await _wait_for(caught_up, f"views caught up to position {last}")
        # every position up to `last` is processed: the watermark says so (positions it covers
        # need no `processed` document; the projector records contiguous ones by raising it)
        assert await db["processed"].count_documents({"_id": {"$gt": last}}) == 0
        orders = [r["aggregate_id"] for r in rows if r["event_type"] == "OrderPlaced"]
        products = [r["aggregate_id"] for r in rows if r["event_type"] == "ProductAdded"]
        views = {d["_id"]: d async for d in db["orders"].find({"_id": {"$in": orders}})}
        assert set(views) == set(orders), f"{len(set(orders) - set(views))} order(s) missing from the views"
        assert {d["version"] for d in views.values()} == {1}
        assert await db["products"].count_documents({"_id": {"$in": products}}) == len(products)
        stock = await conn.fetchval("SELECT stock FROM products WHERE id = $1", load.product)
        view = await db["products"].find_one({"_id": load.product})
        assert view["stock"] == stock == 1_000_000 - len(orders)  # each order reserved once
    finally:
        await conn.close()
        mongo.close()
    return {"accepted": len(accepted), "resent": load.resends, "orders": len(orders)}


# ---- the scenarios -------------------------------------------------------------------------

async def _outage(stack: Stack, server, affected: tuple[str, ...], down_seconds: float = 3.0,
                  stop=None) -> dict:
    """`stop`: how the server goes away (default: a clean shutdown)."""
    run = uuid.uuid4().hex[:8]
    client = await RpcClient.connect(stack.rabbit.url)
    try:
        customer, product = await _setup(client, run)
        load = Load(client, customer, product, run)
        with Readiness(stack.health) as ready:
            load.start()
            await asyncio.sleep(1.5)
            assert load.accepted(), "no traffic before the outage"
            t_down = time.monotonic()
            await asyncio.to_thread(stop or server.stop)
            await asyncio.sleep(down_seconds)
            # stay down until each affected service has said so (bounded): how long a readiness
            # probe takes to notice depends on the driver's timeouts and on the machine's load
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline and not all(
                    503 in ready.statuses(name, t_down, time.monotonic()) for name in affected):
                await asyncio.sleep(0.2)
            await asyncio.to_thread(server.start)
            t_up = time.monotonic()
            t_ready = await ready.all_ready()
            await asyncio.sleep(2.0)  # traffic after the recovery
            await load.stop()
            for name in affected:
                assert 503 in ready.statuses(name, t_down, t_ready), \
                    f"{name} never reported not-ready while {server.name} was down: {ready.statuses(name, t_down, t_ready)}"
            for name in set(NAMES) - set(affected):
                assert ready.statuses(name, t_down, t_ready) <= {200}, f"{name} went not-ready for {server.name}"
        for name, svc in stack.services.items():
            assert svc.proc.poll() is None, f"{name} exited:\n{svc.log.read_text()[-3000:]}"
        assert any(t > t_ready for t in load.answered_at.values()), "no command answered after the recovery"
        assert any(t > t_ready for t in load.queries_ok), "no query answered after the recovery"
        figures = await verify_nothing_lost(stack, load)
        figures["ready_after_s"] = round(t_ready - t_up, 1)
        print(f"\n{server.name} restart: {figures}")
        return figures
    finally:
        await client.close()


async def test_broker_restart(stack):
    await _outage(stack, stack.rabbit, affected=NAMES)


async def test_postgres_crash_and_restart(stack):
    # immediate: every server process quits at once, no shutdown checkpoint (WAL recovery at start)
    await _outage(stack, stack.postgres, affected=("command-service",),
                  stop=lambda: stack.postgres.stop("immediate"))


async def test_mongo_kill_and_restart(stack):
    await _outage(stack, stack.mongo, affected=("projector-service", "query-service"), stop=stack.mongo.kill)


async def test_sigterm_under_load_exits_in_bounded_time_and_loses_nothing(stack):
    run = uuid.uuid4().hex[:8]
    client = await RpcClient.connect(stack.rabbit.url)
    try:
        customer, product = await _setup(client, run)
        # a long request timeout: requests wait in the queue while the service restarts,
        # so nothing is resent and any second receipt would be a redelivery
        load = Load(client, customer, product, run, request_timeout=60.0)
        load.start()
        exits = {}
        for name in ("command-service", "projector-service", "query-service"):
            await asyncio.sleep(0.7)
            svc = stack.services[name]
            started = time.monotonic()
            rc = await asyncio.to_thread(svc.terminate)
            exits[name] = round(time.monotonic() - started, 2)
            assert rc == 0, svc.log.read_text()[-3000:]
            assert exits[name] < SIGTERM_BOUND_S
            await asyncio.to_thread(svc.start)
        await asyncio.sleep(0.5)
        await load.stop()
        figures = await verify_nothing_lost(stack, load)
        assert load.resends == 0
        conn = await asyncpg.connect(stack.dsn)
        try:
            receipts = await conn.fetchval(
                "SELECT count(*) FROM command_audit WHERE command_id = ANY($1::text[])", list(load.sent))
        finally:
            await conn.close()
        assert receipts == len(load.sent), "a command held at SIGTERM was not acknowledged (received twice)"
        print(f"\nSIGTERM under load: exit seconds {exits}, {figures}")
    finally:
        await client.close()


def test_logs_are_clean_of_unhandled_errors(stack):
    """No 'Task exception was never retrieved' or tracebacks outside handled log records."""
    for svc in stack.services.values():
        for log in sorted(svc.logdir.glob(f"{svc.name}.*.log")):
            text = log.read_text(errors="replace")
            assert "never retrieved" not in text, f"{log.name}:\n{text[-3000:]}"
