"""Queue types on the real broker: quorum queues where messages must survive (commands,
events, replay requests, their retry queues, every DLQ), the delivery limit that sends a
message that keeps killing its consumer to the DLQ, and the upgrade of a classic queue left
by an older version (a clear error at start, then `cqrsctl queues migrate` keeps every
message)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import aio_pika
import aio_pika.exceptions
import pytest

from cqrs_shared.messaging import dlq, migrate
from cqrs_shared.messaging.topology import QueueMismatch, declare_consumed_queue
from cqrs_shared.topology import ALL_CONSUMED_QUEUES, COMMAND_QUEUE, QUERY_QUEUE, ConsumedQueue


@pytest.fixture
async def amqp(rabbit_vhost_url):
    conn = await aio_pika.connect_robust(rabbit_vhost_url)
    yield conn
    await conn.close()


async def _is_type(conn, name: str, queue_type: str) -> bool:
    return _queue_types(conn)[name] == queue_type


def _queue_types(conn) -> dict[str, str]:
    """name -> type of the queues of the connection's vhost (rabbitmqctl: AMQP cannot tell)."""
    import shutil
    from urllib.parse import unquote

    if not shutil.which("rabbitmqctl"):
        pytest.skip("rabbitmqctl is needed to read queue types")
    vhost = unquote(conn.url.path[1:])
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "type", "--formatter", "json"],
                         capture_output=True, text=True, timeout=60, check=True)
    return {q["name"]: q["type"] for q in json.loads(out.stdout)}


async def test_every_consumed_queue_has_the_declared_type(amqp):
    for spec in ALL_CONSUMED_QUEUES:
        await declare_consumed_queue(await amqp.channel(), spec)
    types = _queue_types(amqp)
    for spec in ALL_CONSUMED_QUEUES:
        for name, args in spec.queues().items():
            assert types[name] == args["x-queue-type"], name
    assert types[COMMAND_QUEUE.name] == "quorum" and types[QUERY_QUEUE.name] == "classic"
    assert {types[spec.dlq] for spec in ALL_CONSUMED_QUEUES} == {"quorum"}


async def test_a_message_redelivered_past_the_limit_goes_to_the_dlq_and_can_be_replayed(amqp):
    name = f"test.limit.{uuid.uuid4().hex[:8]}"
    spec = ConsumedQueue(name=name, exchange="cqrs.events", routing_keys=(f"{name}.#",),
                         exchange_type="topic", delivery_limit=2)
    ch = await amqp.channel()
    queue = await declare_consumed_queue(ch, spec)
    await ch.default_exchange.publish(aio_pika.Message(b'{"n": 1}', message_id="crashy",
                                                       delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                      routing_key=name)
    # each consumer "crashes" while holding it: the message returns, its delivery count grows
    returned = 0
    for _ in range(10):
        msg = await queue.get(no_ack=False, fail=False)
        if msg is None:
            break
        await msg.nack(requeue=True)
        returned += 1
    assert returned == 3  # first delivery + two redeliveries, then the limit
    letters = []
    for _ in range(50):
        letters = await dlq.browse(amqp, spec.dlq)
        if letters:
            break
        await asyncio.sleep(0.1)
    (letter,) = letters
    assert letter.message_id == "crashy" and letter.original_queue == name
    assert "delivery_limit" in letter.error
    assert await dlq.replay(amqp, spec.dlq) == 1
    back = await queue.get(no_ack=True, fail=False)
    assert back is not None and back.message_id == "crashy" and json.loads(back.body) == {"n": 1}
    assert "x-death" not in (back.headers or {})


async def test_a_classic_queue_from_an_older_version_is_refused_then_migrated_with_its_messages(
        amqp, rabbit_vhost_url):
    ch = await amqp.channel(publisher_confirms=True)
    for name in (COMMAND_QUEUE.name, QUERY_QUEUE.name):  # declared by an earlier test
        await ch.queue_delete(name)
    # what an older version left: the command queue as a classic queue, bound, with messages
    old = await ch.declare_queue(COMMAND_QUEUE.name, durable=True)
    await ch.declare_queue(QUERY_QUEUE.name, durable=True)  # classic without x-queue-type: fine
    for n in range(5):
        await ch.default_exchange.publish(
            aio_pika.Message(json.dumps({"n": n}).encode(), message_id=f"m{n}", correlation_id=f"c{n}",
                             reply_to="amq.rabbitmq.reply-to.x", headers={"x-deadline": "2099-01-01T00:00:00Z"},
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=old.name)

    with pytest.raises(QueueMismatch) as refused:
        await declare_consumed_queue(await amqp.channel(), COMMAND_QUEUE)
    assert COMMAND_QUEUE.name in str(refused.value) and "cqrsctl queues migrate" in str(refused.value)

    cli = Path(sys.executable).parent / "cqrsctl"
    env = {**os.environ, "AMQP_URL": rabbit_vhost_url}
    dry = subprocess.run([str(cli), "queues", "migrate", "--dry-run", "--json"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    states = {m["queue"]: m["state"] for m in json.loads(dry.stdout)}
    assert states[COMMAND_QUEUE.name] == "needs migration" and states[QUERY_QUEUE.name] == "ok"
    done = subprocess.run([str(cli), "queues", "migrate", "--json"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    result = {m["queue"]: m for m in json.loads(done.stdout)}
    assert result[COMMAND_QUEUE.name]["state"] == "migrated" and result[COMMAND_QUEUE.name]["moved"] == 5

    assert await _is_type(amqp, COMMAND_QUEUE.name, "quorum")
    queue = await declare_consumed_queue(await amqp.channel(), COMMAND_QUEUE)  # the service starts again
    got = []
    for _ in range(5):
        msg = await queue.get(no_ack=True, fail=False)
        got.append((msg.message_id, msg.correlation_id, msg.reply_to, json.loads(msg.body),
                    msg.headers["x-deadline"]))
    assert got == [(f"m{n}", f"c{n}", "amq.rabbitmq.reply-to.x", {"n": n}, "2099-01-01T00:00:00Z")
                   for n in range(5)]
    # the bindings are back: a command routed by type reaches the new queue
    ex = await (await amqp.channel()).get_exchange("cqrs.commands")
    await ex.publish(aio_pika.Message(b"{}"), routing_key="PlaceOrder")
    for _ in range(50):
        if (msg := await queue.get(no_ack=True, fail=False)) is not None:
            break
        await asyncio.sleep(0.05)
    assert msg is not None and msg.body == b"{}"
    again = await migrate.migrate(amqp, dry_run=True)
    assert {m.state for m in again} == {"ok"}  # nothing left to do, no `.migrating` queue left
