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
