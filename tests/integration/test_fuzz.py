"""Fuzzing through the real broker: hypothesis-generated commands, queries and events
(random JSON, envelopes with wrong types, huge and deeply nested bodies, invalid UTF-8,
wrong content types) sent to the three services running in-process.

Every request gets exactly one reply, an error (never `accepted`, never `internal_error`);
every event ends in the projector's DLQ as permanent; nothing changes in PostgreSQL or
MongoDB; the services answer valid requests afterwards. The counts are printed.

Hypothesis generates the examples (a fixed seed: the same examples on every run); they are
then sent concurrently, so the whole module stays well under a minute.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import aio_pika
import asyncpg
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from motor.motor_asyncio import AsyncIOMotorClient

from cqrs_shared.contracts.commands import COMMANDS
from cqrs_shared.messaging.rpc import RpcClient, dumps
from cqrs_shared.topology import COMMANDS_EXCHANGE, EVENTS_EXCHANGE, PROJECTOR_QUEUE, QUERIES_EXCHANGE, QUERY_TYPES
from projector_service.config import ProjectorSettings
from projector_service.domain.orders import KNOWN_EVENTS
from projector_service.wiring import build as build_projector
from query_service.config import QuerySettings
from query_service.wiring import build as build_query

N_COMMANDS, N_QUERIES, N_EVENTS = 200, 150, 150
ADMIN = {"userId": "admin-fuzz", "metadata": {"roles": ["admin"]}}
ADDRESS = {"street": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}
BAD_CONTENT_TYPES = ("text/plain", "application/xml", "application/octet-stream", "application/x-www-form-urlencoded",
                     "json", "application/jsonx", "text/json; charset=utf-8")


# ---- strategies ----------------------------------------------------------------------------

# floats include NaN and infinities, which Python writes as NaN/Infinity: not JSON
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
any_json = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                     st.dictionaries(st.text(max_size=12), c, max_size=4)),
                        max_leaves=12)
invalid_utf8 = st.builds(lambda a, b: a + b"\xff\xfe\xc3\x28" + b, st.binary(max_size=40), st.binary(max_size=40))


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


deep_nesting = st.sampled_from([500, 5_000, 100_000]).map(lambda d: b"[" * d + b"]" * d) | \
    st.sampled_from([1_000, 50_000]).map(_deep)
# bodies Python reads but that are not JSON, or that hold text PostgreSQL cannot store
SPECIAL = [b'{"commandId":"nul\\u0000","commandType":"AddProduct","data":{"name":"a\\u0000b"}}',
           b'{"commandId":"sur","commandType":"AddProduct","data":{"name":"\\ud800"}}',
           b'{"commandId":"nan","commandType":"AddProduct","data":{"price":NaN}}',
           b'{"commandId":"inf","commandType":"AddProduct","data":{"stock":1e400}}',
           b'{"commandId":"big","commandType":"AddProduct","data":{"stock":-Infinity}}']
huge = st.integers(min_value=1024 * 1024 + 1, max_value=1024 * 1024 + 2000).map(
    lambda n: b'{"commandId":"huge","pad":"' + b"x" * n + b'"}')


def _no_roles(metadata: Any) -> Any:
    # a fuzzed command must never be allowed to change anything: without a role every
    # command that happens to be valid is rejected as forbidden
    return {k: v for k, v in metadata.items() if k != "roles"} if isinstance(metadata, dict) else metadata


command_envelopes = st.fixed_dictionaries(
    {"commandType": st.sampled_from(sorted(COMMANDS)) | st.text(max_size=20)},
    optional={"commandId": st.text(max_size=70) | any_json, "userId": any_json, "expectedVersion": any_json,
              "timestamp": any_json, "data": any_json | st.fixed_dictionaries({}, optional={
                  k: any_json for k in ("customerId", "productId", "orderId", "name", "email", "creditLimit",
                                        "price", "stock", "quantity", "items", "shippingAddress", "reason",
                                        "trackingNumber")}),
              "metadata": any_json.map(_no_roles)})


@st.composite
def requests(draw, types: list[str], envelopes, type_field: str) -> tuple[str, bytes, str | None]:
    """(routing key, body, content type) of a command or query request"""
    kind = draw(st.sampled_from(["json", "envelope", "envelope", "utf8", "deep", "content_type"]))
    key = draw(st.sampled_from(types) | st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s))
    ctype = "application/json"
    if kind == "json":
        body = dumps(draw(any_json))
    elif kind == "envelope":
        env = draw(envelopes)
        key = env[type_field] if isinstance(env[type_field], str) and env[type_field] else key
        body = dumps(env)
    elif kind == "utf8":
        body = draw(invalid_utf8)
    elif kind == "deep":
        body = draw(deep_nesting)
    else:
        body = dumps(draw(envelopes))
        ctype = draw(st.sampled_from(BAD_CONTENT_TYPES))
    return key.encode("utf-8", "replace").decode()[:200] or "x", body, ctype


query_envelopes = st.fixed_dictionaries(
    {"queryType": st.sampled_from(QUERY_TYPES) | st.text(max_size=20)},
    optional={"queryId": any_json, "parameters": any_json | st.dictionaries(
        st.sampled_from(["orderId", "customerId", "productId", "page", "pageSize", "dateFrom", "dateTo", "limit",
                         "text", "status", "minAmount", "maxAmount", "includeHistory"]), any_json, max_size=5)})


REQUIRED_EVENT_FIELDS = ("eventId", "eventType", "aggregateId", "aggregateType", "version", "position", "timestamp")


@st.composite
def event_envelopes(draw) -> dict:
    """Event-shaped bodies that can never be applied: an unknown type, a required field
    missing, or a number field that is no number."""
    env = {"eventId": str(uuid.uuid4()), "eventType": draw(st.sampled_from(sorted(KNOWN_EVENTS))),
           "aggregateId": draw(st.text(min_size=1, max_size=20)), "aggregateType": "order",
           "version": draw(st.integers(1, 5)), "position": draw(st.integers(1, 10**6)),
           "timestamp": "2026-01-01T00:00:00.000Z", "data": draw(any_json), "metadata": draw(any_json)}
    flaw = draw(st.sampled_from(["type", "missing", "number"]))
    if flaw == "type":
        env["eventType"] = draw(st.text(max_size=20).filter(lambda t: t not in KNOWN_EVENTS))
    elif flaw == "missing":
        del env[draw(st.sampled_from(REQUIRED_EVENT_FIELDS))]
    else:
        env[draw(st.sampled_from(["version", "position"]))] = draw(
            st.text(max_size=10).filter(lambda t: not t.strip().lstrip("+-").isdigit()) | st.lists(st.integers(), max_size=2))
    return env


@st.composite
def events(draw) -> tuple[str, bytes, str | None, dict]:
    kind = draw(st.sampled_from(["json", "envelope", "envelope", "utf8", "deep"]))
    key = "fuzz." + draw(st.sampled_from(sorted(KNOWN_EVENTS)) | st.text(alphabet="abcXYZ.", max_size=10))
    headers = draw(st.sampled_from([{}, {"x-aggregate-id": "fuzz-agg"}]))
    if kind == "json":
        value = draw(any_json)
        body = dumps(value)
    elif kind == "envelope":
        body = dumps(draw(event_envelopes()))
    elif kind == "utf8":
        body = draw(invalid_utf8)
    else:
        body = draw(deep_nesting)
    return key, body, draw(st.sampled_from(["application/json", None, "text/plain"])), headers


def generate(strategy: st.SearchStrategy, n: int) -> list:
    """n examples drawn by hypothesis (generation phase only, fixed seed, no shrinking)."""
    out: list = []

    @seed(20261123)
    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example) -> None:
        out.append(example)

    collect()
    return out


# ---- the services --------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def services(command_app, rabbit_vhost_url, pg_dsn, mongo_url, mongo_db_name):
    projector = await build_projector(ProjectorSettings(amqp_url=rabbit_vhost_url, mongo_url=mongo_url,
                                                        mongo_db=mongo_db_name, health_port=-1))
    query = await build_query(QuerySettings(amqp_url=rabbit_vhost_url, mongo_url=mongo_url,
                                            mongo_db=mongo_db_name, health_port=-1))
    client = await RpcClient.connect(rabbit_vhost_url)
    mongo = AsyncIOMotorClient(mongo_url)
    yield {"client": client, "dsn": pg_dsn, "db": mongo[mongo_db_name], "url": rabbit_vhost_url}
    mongo.close()
    await client.close()
    await query.stop()
    await projector.stop()


async def _snapshot(dsn: str, db) -> dict:
    conn = await asyncpg.connect(dsn)
    try:
        state = {t: [tuple(r) for r in await conn.fetch(f"SELECT * FROM {t} ORDER BY 1")]
                 for t in ("customers", "products", "orders", "order_items", "position_counter")}
        state["events"] = [tuple(r) for r in await conn.fetch("SELECT position, event_id FROM events ORDER BY 1")]
    finally:
        await conn.close()
    for c in ("orders", "customers", "products", "processed", "projector_state"):
        state[f"mongo.{c}"] = [d async for d in db[c].find({}).sort("_id", 1)]
    return state


async def _seed(client: RpcClient, db) -> int:
    run = uuid.uuid4().hex[:6]
    await client.send_command({"commandType": "RegisterCustomer", **ADMIN, "data": {
        "customerId": f"c-{run}", "name": "Fuzz", "email": "f@example.com", "creditLimit": "1000"}})
    await client.send_command({"commandType": "AddProduct", **ADMIN, "data": {
        "productId": f"p-{run}", "name": "Pen", "price": "2.50", "stock": 10}})
    placed = await client.send_command({"commandType": "PlaceOrder", **ADMIN, "data": {
        "orderId": f"o-{run}", "customerId": f"c-{run}", "items": [{"productId": f"p-{run}", "quantity": 1}],
        "shippingAddress": ADDRESS}})
    assert placed["status"] == "accepted", placed
    ok = await client.query({"queryType": "GetOrderDetails", "minPosition": placed["position"],
                             "parameters": {"orderId": f"o-{run}"}})
    assert ok["status"] == "ok", ok
    return placed["position"]


async def _send_all(client: RpcClient, exchange: str, cases, *, timeout: float = 20.0) -> list[dict]:
    sem = asyncio.Semaphore(32)

    async def one(case):
        key, body, ctype = case
        async with sem:
            return await client.call_raw(exchange, key, body, content_type=ctype, timeout=timeout)

    return await asyncio.gather(*(one(c) for c in cases))


async def test_fuzzed_messages_get_errors_or_dead_letters_and_change_nothing(services):
    client, db = services["client"], services["db"]
    await _seed(client, db)
    await asyncio.sleep(0.5)  # the seed's events are applied: the views are at rest
    before = await _snapshot(services["dsn"], db)

    cmd_cases = generate(requests(sorted(COMMANDS), command_envelopes, "commandType"), N_COMMANDS) + [("PlaceOrder", b, "application/json")
                                                    for b in generate(huge, 3)] + \
        [("AddProduct", b, None) for b in SPECIAL]
    qry_cases = generate(requests(list(QUERY_TYPES), query_envelopes, "queryType"), N_QUERIES) + [("GetOrderDetails", b, "application/json")
                                                  for b in generate(huge, 3)] + \
        [("GetOrderDetails", b.replace(b"commandId", b"queryId"), None) for b in SPECIAL]
    evt_cases = generate(events(), N_EVENTS)

    # commands: one reply each, rejected, never internal_error
    replies = await _send_all(client, COMMANDS_EXCHANGE, cmd_cases)
    statuses = Counter(r["status"] for r in replies)
    codes = Counter((r.get("error") or {}).get("code") for r in replies)
    assert statuses == {"rejected": len(cmd_cases)}, (statuses, codes)
    assert "internal_error" not in codes, codes

    # queries: one reply each; errors are validation or not-found, never internal_error
    qreplies = await _send_all(client, QUERIES_EXCHANGE, qry_cases)
    qcodes = Counter((r.get("error") or {}).get("code") if r["status"] != "ok" else "ok" for r in qreplies)
    assert set(qcodes) <= {"ok", "validation_error", "not_found"}, qcodes
    assert qcodes["validation_error"] >= len(qry_cases) // 2, qcodes

    # events: each ends in the projector's DLQ, as a permanent failure
    conn = await aio_pika.connect_robust(services["url"])
    try:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.get_exchange(EVENTS_EXCHANGE)
        for key, body, ctype, headers in evt_cases:
            await ex.publish(aio_pika.Message(body, content_type=ctype, headers=headers,
                                              message_id=str(uuid.uuid4())), routing_key=key)
        dlq = await ch.declare_queue(PROJECTOR_QUEUE.dlq, passive=True)
        dead: list = []
        for _ in range(300):
            msg = await dlq.get(no_ack=True, fail=False)
            if msg is None:
                if len(dead) >= len(evt_cases):
                    break
                await asyncio.sleep(0.1)
                continue
            dead.append(msg)
    finally:
        await conn.close()
    assert len(dead) == len(evt_cases)
    assert {m.headers["x-error-kind"] for m in dead} == {"permanent"}

    # nothing changed, and the services still serve
    assert await _snapshot(services["dsn"], db) == before
    await _seed(client, db)

    print(f"\nfuzz: {len(cmd_cases)} commands {dict(codes)}; {len(qry_cases)} queries {dict(qcodes)}; "
          f"{len(evt_cases)} events, {len(dead)} dead-lettered")
