"""Chaos test: a random workload of thousands of commands while every service process is
killed (kill -9) and restarted several times and the RabbitMQ node is restarted once; at the
end nothing accepted is lost or applied twice, every view equals what the accepted commands
imply, nothing is left unacknowledged and the DLQs hold exactly the poison injected.

Servers: the PRIVATE RabbitMQ node, PostgreSQL cluster and nx-27017 of tests/servers.py
(the shared ones are never touched). Processes: one command service, TWO projector-service
replicas, one query service.

Workload: tests/oracle/workload.py, CHAOS_COMMANDS commands (default 2,000; `make chaos`
runs more), seed CHAOS_SEED, all eight types in concurrent batches. The client resends a
command with the SAME commandId until it is answered (no reply in time, broker away, or an
answer that is not stored: `internal_error`/`unavailable`), so the outcome of every command is
known; idempotency makes the resends safe, and the first stored reply is the one that counts.

Chaos, at fixed points of the workload's progress (so it happens during the workload
whatever the machine's speed): three rounds, each killing (SIGKILL) and restarting every
service process once in a seeded random order, and one restart of the RabbitMQ node at 50 %.

Poison, injected at 40 %: a non-JSON event and an event of an unknown type (into the
projector's queue through `cqrs.events`), a replay request for a queue replays may not target
(command-service.replay), and a malformed command without `reply_to` (which by design is not
dead-lettered: it is answered `validation_error` to nobody and audited, see protocol.md).

Checks: the events table against the replies (one event per accepted command, at its
position, gap-free, all published); every query answer equals the oracle's model; once the
services are stopped every consumed queue (and its retry queues) holds no message, ready or
unacknowledged; each DLQ holds exactly the poison sent to it, with its `x-error`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter

import aio_pika
import asyncpg
import pytest

from cqrs_shared.messaging.rpc import RpcClient, RpcTimeout
from oracle.compare import check_events, compare_all, event_rows, event_times
from oracle.model import Model
from oracle.workload import Progress, Workload, check_replies, figures, format_figures, run_workload
from procs import Service
from servers import free_port, parallel, private_servers  # noqa: F401

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("CHAOS_SEED", "20261124"))
COMMANDS = int(os.environ.get("CHAOS_COMMANDS", "2000"))
ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "3"))  # kills per service process
REQUEST_TIMEOUT = 5.0
MONGO_DB = "views"
RETRY_CODES = {"internal_error", "unavailable"}  # answers that are not stored: send again

# (exchange, routing key, message id, body, reply_to, DLQ it must reach or None, x-error part)
POISON = [
    ("cqrs.events", "order.OrderPlaced", "poison-not-json", b"{not json at all", None,
     "projector-service.events.dlq", "body is not JSON"),
    ("cqrs.events", "order.OrderTeleported", "poison-unknown-type", json.dumps({
        "eventId": "poison-unknown-type", "eventType": "OrderTeleported", "aggregateId": "o-poison",
        "aggregateType": "order", "version": 1, "position": 1, "timestamp": "2026-11-23T00:00:00.000Z",
        "data": {}}).encode(), None, "projector-service.events.dlq", "unknown event type 'OrderTeleported'"),
    ("cqrs.internal", "events.replay", "poison-replay-target", json.dumps({
        "fromPosition": 1, "queue": "command-service.commands"}).encode(), None,
     "command-service.replay.dlq", "is not allowed"),
    ("cqrs.commands", "PlaceOrder", "poison-command", json.dumps({
        "commandId": "poison-command-1", "commandType": "PlaceOrder", "userId": "nobody",
        "data": {"orderId": "", "items": "none"}}).encode(), None, None, None),
]


@pytest.fixture(scope="module")
def stack(private_servers, tmp_path_factory):  # noqa: F811
    from command_service.adapters.postgres import apply_migrations, ensure_database

    rabbit, postgres, mongo = private_servers
    dsn = postgres.dsn("cqrs")
    asyncio.run(ensure_database(dsn))
    apply_migrations(dsn)
    env = {**os.environ, "AMQP_URL": rabbit.url, "POSTGRES_DSN": dsn, "MONGO_URL": mongo.url,
           "MONGO_DB": MONGO_DB, "RELAY_POLL_SECONDS": "0.2"}
    logdir = tmp_path_factory.mktemp("chaos-logs")

    def service(name: str, label: str, **extra: str) -> Service:
        return Service(name, {**env, "HEALTH_PORT": str(free_port()), **extra}, logdir, label)

    services = {
        "command": service("command-service", "command"),
        "projector-0": service("projector-service", "projector-0", INSTANCE="projector-0"),
        "projector-1": service("projector-service", "projector-1", INSTANCE="projector-1"),
        "query": service("query-service", "query"),
    }
    parallel(*(s.start for s in services.values()))
    yield {"rabbit": rabbit, "dsn": dsn, "services": services, "logdir": logdir}
    for s in services.values():
        s.terminate()


def _queues(rabbit) -> dict[str, tuple[int, int]]:
    """{queue: (messages ready, messages unacknowledged)} on the private node."""
    out = {}
    for line in rabbit.ctl("-q", "list_queues", "--no-table-headers", "name", "messages_ready",
                           "messages_unacknowledged").splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].isdigit():
            out[parts[0]] = (int(parts[1]), int(parts[2]))
    return out


def _busy(queues: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {q: d for q, d in queues.items() if not q.endswith(".dlq") and d != (0, 0)}


async def _inject_poison(url: str) -> None:
    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        for exchange, key, mid, body, reply_to, _, _ in POISON:
            ex = await ch.get_exchange(exchange, ensure=False)
            await ex.publish(aio_pika.Message(body, content_type="application/json", message_id=mid,
                                              reply_to=reply_to, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                             routing_key=key)
    finally:
        await conn.close()


async def _browse_dlqs(url: str, names: list[str]) -> dict[str, list[tuple[str, str]]]:
    """(message id, x-error) of every message in each DLQ; nothing is acknowledged (closing
    the channel returns them)."""
    conn = await aio_pika.connect(url)
    out: dict[str, list[tuple[str, str]]] = {}
    try:
        ch = await conn.channel()
        for name in names:
            q = await ch.get_queue(name, ensure=False)
            out[name] = []
            while (msg := await q.get(no_ack=False, fail=False)) is not None:
                err = (msg.headers or {}).get("x-error", "")
                out[name].append((msg.message_id or "", err.decode() if isinstance(err, bytes) else str(err)))
    finally:
        await conn.close()
    return out


async def test_chaos_nothing_lost_or_doubled(stack):
    rabbit, dsn, services = stack["rabbit"], stack["dsn"], stack["services"]
    rng = random.Random(SEED)
    progress = Progress(COMMANDS)
    client = await RpcClient.connect(rabbit.url)
    attempts: Counter = Counter()  # commandId -> sends (the workload's own resends of a commandId add theirs)
    transient: Counter = Counter()  # why a send was repeated
    kills: Counter = Counter()
    broker_restarts = 0
    chaos_log: list[str] = []
    t0 = time.monotonic()

    # the workload does not run ahead of the chaos: it waits at each scheduled point until
    # that step has begun (a kill or a broker restart takes seconds; without this gate a
    # fast machine would finish the workload before the chaos)
    gate = {"at": 0.0, "begun": asyncio.Event()}

    async def send(cmd: dict) -> dict:
        """Until answered with a stored reply, same commandId each time."""
        while progress.done >= gate["at"]:
            await gate["begun"].wait()  # set when the step begins and the gate moves on
        while True:
            attempts[cmd["commandId"]] += 1
            try:
                reply = await client.send_command(cmd, timeout=REQUEST_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except RpcTimeout:
                transient["timeout"] += 1
            except Exception as exc:  # the broker is away (connection or channel closed)
                transient[type(exc).__name__] += 1
                await asyncio.sleep(0.5)
            else:
                code = (reply.get("error") or {}).get("code")
                if code not in RETRY_CODES:
                    return reply
                transient[code] += 1
                await asyncio.sleep(0.5)

    schedule: list[tuple[float, str]] = []
    names = list(services)
    steps = [n for _ in range(ROUNDS) for n in rng.sample(names, len(names))]
    for i, name in enumerate(steps):
        schedule.append((0.04 + 0.9 * i / len(steps), name))
    schedule.append((0.5, "rabbitmq"))
    schedule.append((0.4, "poison"))
    schedule.sort()

    async def chaos() -> None:
        nonlocal broker_restarts
        def hold_at(i: int) -> None:
            """Sends wait at step i's point until it begins (the previous step's waiters
            are let through to check against it)."""
            previous = gate["begun"]
            gate.update(at=schedule[i][0] * COMMANDS if i < len(schedule) else float("inf"),
                        begun=asyncio.Event())
            previous.set()

        hold_at(0)
        for i, (fraction, what) in enumerate(schedule):
            begun = gate["begun"]
            await progress.reached(fraction).wait()
            at = f"{time.monotonic() - t0:5.1f}s {progress.done:>5}"
            if what == "rabbitmq":
                restart = asyncio.create_task(asyncio.to_thread(rabbit.restart, 1.0))
                await asyncio.sleep(0.2)
                begun.set()  # commands race the node going down
                hold_at(i + 1)
                await restart
                broker_restarts += 1
            elif what == "poison":
                for _ in range(60):  # the broker may be restarting
                    try:
                        await _inject_poison(rabbit.url)
                        break
                    except Exception:  # noqa: BLE001
                        await asyncio.sleep(0.5)
                else:
                    raise AssertionError("could not inject the poison messages")
                begun.set()
                hold_at(i + 1)
            else:
                svc = services[what]
                svc.kill9()
                kills[what] += 1
                begun.set()
                hold_at(i + 1)
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                await asyncio.to_thread(svc.start)
            chaos_log.append(f"{at} {what}")

    try:
        chaos_task = asyncio.create_task(chaos())
        workload_task = asyncio.create_task(run_workload(
            client, Workload(SEED, customers=60, products=30), COMMANDS, progress=progress, send=send))
        await asyncio.wait({chaos_task, workload_task}, return_when=asyncio.FIRST_EXCEPTION)
        if chaos_task.done() and chaos_task.exception() is not None:
            workload_task.cancel()  # it would wait at the gate forever
            await chaos_task
        records = await workload_task
        await asyncio.wait_for(chaos_task, 120)
        sent_s = time.monotonic() - t0

        # the outbox relay publishes what is stored; then the views catch up to it
        conn = await asyncpg.connect(dsn)
        try:
            deadline = time.monotonic() + 60
            while await conn.fetchval("SELECT count(*) FROM events WHERE published_at IS NULL"):
                assert time.monotonic() < deadline, "stored events left unpublished"
                await asyncio.sleep(0.5)
            audit = await conn.fetchrow("SELECT status, error_code FROM command_audit WHERE command_id = $1",
                                        "poison-command-1")
        finally:
            await conn.close()
        rows = await event_rows(dsn)
        model = Model.build(records, event_times(rows))
        reply_problems = check_replies(records)
        event_problems = check_events(records, rows)

        comparison = await compare_all(client.query, model, seed=SEED, searches=60, records=records)
        deadline = time.monotonic() + 120
        while busy := _busy(await asyncio.to_thread(_queues, rabbit)):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        drained_s = time.monotonic() - t0
    finally:
        await client.close()

    # nothing left, ready or unacknowledged, once the services are stopped
    rcs = {n: s.terminate() for n, s in services.items()}
    queues = await asyncio.to_thread(_queues, rabbit)
    dlq_names = sorted(q for q in queues if q.endswith(".dlq"))
    dlqs = await _browse_dlqs(rabbit.url, dlq_names)

    injected = Counter(p[5] for p in POISON if p[5])
    found = Counter({q: len(m) for q, m in dlqs.items() if m})
    fig = figures(records)
    duration = time.monotonic() - t0
    resent = sum(attempts.values()) - len(records)  # sent again for want of a stored answer
    print(f"\n== chaos: seed {SEED}, {len(records)} commands sent in {sent_s:.1f} s, queues drained at "
          f"{drained_s:.1f} s, {duration:.1f} s in all")
    print(format_figures(fig))
    print(f"resends of the same commandId until answered: {resent} ("
          + ", ".join(f"{k} {v}" for k, v in sorted(transient.items())) + ")")
    print("kill -9 + restart: " + ", ".join(f"{k} {v}" for k, v in kills.items())
          + f"; RabbitMQ node restarts: {broker_restarts}")
    print("chaos timeline (s, commands done): " + "; ".join(chaos_log))
    print(f"events: {len(rows)} (last position {model.last_position}), all published; orders "
          f"{len(model.orders)}, customers {len(model.customers)}, products {len(model.products)}")
    print("poison injected per DLQ: " + ", ".join(f"{k} {v}" for k, v in sorted(injected.items()))
          + f" (+1 malformed command without reply_to: audit {dict(audit) if audit else None}); found: "
          + ", ".join(f"{k} {v}" for k, v in sorted(found.items())))
    print(f"queries compared: {comparison.total}, mismatches {len(comparison.mismatches)}")
    print(f"queues left busy: {_busy(queues) or 'none'}; exit codes at SIGTERM {rcs}")

    assert not reply_problems, "\n".join(reply_problems[:20])
    assert not event_problems, "\n".join(event_problems[:20])
    assert not model.violations, "\n".join(model.violations[:20])
    assert not model.check_invariants()
    assert not comparison.mismatches, f"{len(comparison.mismatches)} mismatches:\n" + "\n".join(comparison.mismatches[:10])
    assert not busy, f"queues not drained: {busy}"
    assert not _busy(queues), f"messages left after the services stopped: {_busy(queues)}"
    assert found == injected, (found, injected, dlqs)
    for _, _, mid, _, _, dlq, error in POISON:
        if dlq:
            errors = [e for m, e in dlqs[dlq] if m == mid]
            assert len(errors) == 1 and error in errors[0], (mid, dlqs[dlq])
    assert audit is not None and audit["error_code"] == "validation_error", audit
    assert all(rc == 0 for rc in rcs.values()), rcs
    assert kills == {n: ROUNDS for n in services} and broker_restarts == 1
    assert len(records) >= COMMANDS and set(fig["per_type"]) == {
        "RegisterCustomer", "AddProduct", "RestockProduct", "PlaceOrder", "ShipOrder", "DeliverOrder",
        "CancelOrder", "RefundOrder"}
    assert resent > 0, "no command had to be resent: the chaos did not bite"
