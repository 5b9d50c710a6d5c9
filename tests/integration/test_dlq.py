"""DLQ tooling against the real broker: poison in the projector's queue ends in its DLQ;
summary groups by error; browse changes nothing; replay by filter returns messages to
their queue with their ids; purge empties."""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import pytest

from cqrs_shared.messaging import dlq
from cqrs_shared.messaging.consumer import PermanentFailure, QueueConsumer
from cqrs_shared.topology import ConsumedQueue


@pytest.fixture
async def amqp(rabbit_vhost_url):
    conn = await aio_pika.connect_robust(rabbit_vhost_url)
    yield conn
    await conn.close()


async def test_inspect_replay_and_purge(amqp):
    name = f"test.dlq.{uuid.uuid4().hex[:6]}"
    spec = ConsumedQueue(name=name, exchange="cqrs.events", routing_keys=(f"{name}.#",), exchange_type="topic",
                         retry_delays_ms=(20,))
    healed = asyncio.Event()
    accepted: list[tuple[str | None, dict]] = []

    async def handler(message):
        body = json.loads(message.body)
        if body.get("poison") and not healed.is_set():
            raise PermanentFailure(f"unknown event type {body['kind']}")
        accepted.append((message.message_id, body))

    consumer = QueueConsumer(amqp, spec, handler, service="test-service")
    await consumer.start()
    ch = await amqp.channel()
    for i, kind in enumerate(["A", "A", "B"]):
        await ch.default_exchange.publish(
            aio_pika.Message(json.dumps({"poison": True, "kind": kind, "i": i}).encode(), message_id=f"m{i}"),
            routing_key=name)
    for _ in range(100):
        if (await ch.declare_queue(spec.dlq, passive=True)).declaration_result.message_count == 3:
            break
        await asyncio.sleep(0.05)

    (s,) = await dlq.summary(amqp, [spec.dlq])
    assert s.count == 3
    assert s.by_error == {"PermanentFailure: unknown event type A": 2, "PermanentFailure: unknown event type B": 1}
    letters = await dlq.browse(amqp, spec.dlq)
    assert [d.message_id for d in letters] == ["m0", "m1", "m2"]
    assert letters[0].as_dict()["originalQueue"] == name and letters[0].as_dict()["service"] == "test-service"
    assert (await dlq.summary(amqp, [spec.dlq]))[0].count == 3  # browsing removed nothing

    healed.set()  # the bug is fixed: replay only the B messages
    assert await dlq.replay(amqp, spec.dlq, lambda d: "type B" in d.error) == 1
    for _ in range(100):
        if accepted:
            break
        await asyncio.sleep(0.05)
    assert accepted == [("m2", {"poison": True, "kind": "B", "i": 2})]
    assert [d.message_id for d in await dlq.browse(amqp, spec.dlq)] == ["m0", "m1"]

    assert await dlq.replay(amqp, spec.dlq, limit=1) == 1
    assert await dlq.purge(amqp, spec.dlq) == 1
    for _ in range(100):
        if len(accepted) == 2:
            break
        await asyncio.sleep(0.05)
    assert [m for m, _ in accepted] == ["m2", "m0"]
    assert (await dlq.summary(amqp, [spec.dlq]))[0].count == 0
    await consumer.stop()


async def test_cqrsctl_dlq_commands(amqp, rabbit_vhost_url):
    import subprocess
    import sys
    from pathlib import Path

    ch = await amqp.channel()
    from cqrs_shared.messaging.topology import declare_all, declare_exchanges
    await declare_exchanges(ch)
    await declare_all(ch)
    for i in range(2):
        await ch.default_exchange.publish(aio_pika.Message(b"not json", message_id=f"p{i}", headers={
            "x-error": "PermanentFailure: not JSON", "x-original-queue": "projector-service.events",
            "x-service": "projector-service", "x-attempts": 1}), routing_key="projector-service.events.dlq")
    cli = str(Path(sys.executable).parent / "cqrsctl")
    env = {"AMQP_URL": rabbit_vhost_url, "PATH": "/usr/bin:/bin"}

    def run(*args):
        return subprocess.run([cli, "dlq", *args, "--json"], capture_output=True, text=True, env=env, timeout=30)

    listed = json.loads(run("list").stdout)
    entry = next(x for x in listed if x["queue"] == "projector-service.events.dlq")
    assert entry["count"] == 2 and entry["byError"] == {"PermanentFailure: not JSON": 2}
    shown = json.loads(run("show", "projector-service.events", "--index", "1").stdout)
    assert shown[0]["messageId"] == "p1" and shown[0]["body"] == "not json"
    # replay one by id back to its queue (nothing consumes it here, so it stays there)
    assert json.loads(run("replay", "projector-service.events", "--message-id", "p0").stdout) == {"replayed": 1}
    fresh = await amqp.channel()
    main = await fresh.declare_queue("projector-service.events", passive=True)
    assert main.declaration_result.message_count == 1
    back = await main.get(no_ack=True)
    assert back.message_id == "p0" and back.body == b"not json" and back.headers["x-replayed-from"] == "projector-service.events.dlq"
    await fresh.close()
    assert json.loads(run("purge", "projector-service.events", "--yes").stdout) == {"purged": 1}
    unreachable = subprocess.run([cli, "dlq", "list"], capture_output=True, text=True, timeout=30,
                                 env={"AMQP_URL": "amqp://guest:guest@127.0.0.1:1/", "PATH": "/usr/bin:/bin"})
    assert unreachable.returncode == 2 and "Traceback" not in unreachable.stderr
