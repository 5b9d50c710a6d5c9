"""QueueConsumer against the real broker: retries with backoff counted in headers, the
dead-letter queue and its headers, per-key ordering, deadlines."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone

import aio_pika
import pytest

from cqrs_shared.messaging.consumer import PermanentFailure, QueueConsumer
from cqrs_shared.topology import ConsumedQueue


@pytest.fixture
async def amqp(rabbit_vhost_url):
    conn = await aio_pika.connect_robust(rabbit_vhost_url)
    yield conn
    await conn.close()


def spec() -> ConsumedQueue:
    name = f"test.{uuid.uuid4().hex[:8]}"
    return ConsumedQueue(name=name, exchange="cqrs.events", routing_keys=(f"{name}.#",),
                         exchange_type="topic", retry_delays_ms=(50, 100, 150))


async def publish(conn, queue: str, body: dict, **props) -> None:
    ch = await conn.channel()
    await ch.default_exchange.publish(aio_pika.Message(json.dumps(body).encode(), **props), routing_key=queue)
    await ch.close()


async def get_one(conn, queue: str, timeout: float = 5.0):
    ch = await conn.channel()
    q = await ch.declare_queue(queue, passive=True)
    async with asyncio.timeout(timeout):
        while True:
            msg = await q.get(no_ack=True, fail=False)
            if msg is not None:
                await ch.close()
                return msg
            await asyncio.sleep(0.05)


async def test_transient_failures_retry_with_backoff_then_dead_letter(amqp):
    s, attempts = spec(), []

    async def always_fails(message):
        attempts.append(asyncio.get_running_loop().time())
        raise ConnectionError("database unavailable")

    consumer = QueueConsumer(amqp, s, always_fails, service="test-service")
    await consumer.start()
    try:
        await publish(amqp, s.name, {"n": 1}, message_id="m-1")
        dead = await get_one(amqp, s.dlq)
    finally:
        await consumer.stop()
    assert len(attempts) == 4  # first try + one per retry delay
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert gaps[0] >= 0.04 and gaps[2] >= 0.14  # increasing delays, one queue each
    h = dead.headers
    assert h["x-attempts"] == 4 and h["x-service"] == "test-service" and h["x-error-kind"] == "retries-exhausted"
    assert "database unavailable" in h["x-error"] and h["x-original-queue"] == s.name
    assert h["x-first-failure-at"].endswith("Z")
    assert dead.message_id == "m-1" and json.loads(dead.body) == {"n": 1}


async def test_permanent_failure_goes_to_dlq_at_once(amqp):
    s, calls = spec(), []

    async def poison(message):
        calls.append(1)
        raise PermanentFailure("not JSON")

    consumer = QueueConsumer(amqp, s, poison, service="test-service")
    await consumer.start()
    try:
        await publish(amqp, s.name, {"bad": True})
        dead = await get_one(amqp, s.dlq)
    finally:
        await consumer.stop()
    assert calls == [1]
    assert dead.headers["x-attempts"] == 1 and dead.headers["x-error-kind"] == "permanent"


async def test_recovers_after_transient_failures_and_acks(amqp):
    s, seen = spec(), []

    async def flaky(message):
        seen.append(int((message.headers or {}).get("x-attempts", 0)))
        if len(seen) < 3:
            raise TimeoutError("slow")

    consumer = QueueConsumer(amqp, s, flaky, service="test-service")
    await consumer.start()
    try:
        await publish(amqp, s.name, {"n": 1})
        for _ in range(100):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        ch = await amqp.channel()
        main = await ch.declare_queue(s.name, passive=True)
        dlq = await ch.declare_queue(s.dlq, passive=True)
        assert seen == [0, 1, 2]
        assert main.declaration_result.message_count == 0 and dlq.declaration_result.message_count == 0
    finally:
        await consumer.stop()


async def test_messages_with_the_same_key_are_handled_in_order(amqp):
    s, order, b_done = spec(), [], asyncio.Event()

    async def slow_first(message):
        n = json.loads(message.body)["n"]
        if n == 0:  # the first "a" is held until "b" is done (at most 10 s): b must not wait for a
            try:
                await asyncio.wait_for(b_done.wait(), 10)
            except asyncio.TimeoutError:
                pass
        order.append((message.headers["k"], n))
        if message.headers["k"] == "b":
            b_done.set()

    consumer = QueueConsumer(amqp, s, slow_first, service="test-service", key_of=lambda m: m.headers.get("k"))
    await consumer.start()
    try:
        for n in range(4):
            await publish(amqp, s.name, {"n": n}, headers={"k": "a"})
        await publish(amqp, s.name, {"n": 9}, headers={"k": "b"})
        for _ in range(300):
            if len(order) == 5:
                break
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()
    assert [n for k, n in order if k == "a"] == [0, 1, 2, 3]
    assert order[0] == ("b", 9)  # other keys are not held up


async def test_request_past_its_deadline_is_not_executed(amqp):
    s, ran, answered = spec(), [], []

    async def handler(message):
        ran.append(1)

    async def on_deadline(message):
        answered.append(message.headers["x-deadline"])

    consumer = QueueConsumer(amqp, s, handler, service="test-service", on_deadline=on_deadline)
    await consumer.start()
    try:
        past = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        future = (datetime.now(timezone.utc) + timedelta(seconds=60)).isoformat().replace("+00:00", "Z")
        await publish(amqp, s.name, {"n": 1}, headers={"x-deadline": past})
        await publish(amqp, s.name, {"n": 2}, headers={"x-deadline": future})
        for _ in range(100):
            if answered and ran:
                break
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()
    assert answered == [past] and ran == [1]
