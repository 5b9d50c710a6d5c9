"""Upgrading queues in place: a queue that exists with other arguments than this version
declares (a classic queue from an older version that is now a quorum queue) is rebuilt
without losing a message.

For each such queue Q, with the services stopped:
1. declare `Q.migrating` (quorum) and bind it like Q, so that what is published meanwhile
   is kept (it may then arrive twice: every consumer here is idempotent);
2. move Q's messages into it (publish with confirms, then acknowledge), delete Q once it is
   empty, declare Q the new way with its bindings;
3. unbind `Q.migrating`, move its messages back into Q and delete it once empty.
A crash at any step leaves every message in Q or in `Q.migrating`; running it again
resumes. Queues that already match are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
import aio_pika.exceptions
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from cqrs_shared.messaging.topology import declare_exchanges
from cqrs_shared.topology import ALL_CONSUMED_QUEUES, QUORUM

SUFFIX = ".migrating"


@dataclass
class Migration:
    queue: str
    state: str  # "ok" (already as declared), "absent", "migrated", "needs migration" (dry run)
    moved: int = 0


def wanted() -> list[tuple[str, dict, list[tuple[str, str]]]]:
    """(queue, arguments, bindings) of every queue of the topology."""
    out = []
    for spec in ALL_CONSUMED_QUEUES:
        for name, arguments in spec.queues().items():
            out.append((name, arguments, spec.bindings() if name == spec.name else []))
    return out


async def _state(connection: AbstractRobustConnection, name: str, arguments: dict) -> str:
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return "absent"
    finally:
        if not channel.is_closed:
            await channel.close()
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, durable=True, arguments=arguments)  # a no-op when equal
        return "ok"
    except aio_pika.exceptions.ChannelPreconditionFailed:
        return "needs migration"
    finally:
        if not channel.is_closed:
            await channel.close()


async def _count(channel: AbstractChannel, name: str) -> int:
    # asked of the broker now (a robust channel's declare_queue may answer from its cache)
    underlay = await channel.get_underlay_channel()
    return (await underlay.queue_declare(name, passive=True)).message_count


async def _move(channel: AbstractChannel, source: str, target: str) -> int:
    queue = await channel.declare_queue(source, passive=True)
    moved = 0
    while True:
        msg = await queue.get(no_ack=False, fail=False)
        if msg is None:
            return moved
        await channel.default_exchange.publish(
            aio_pika.Message(msg.body, headers=dict(msg.headers or {}), content_type=msg.content_type,
                             content_encoding=msg.content_encoding, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                             priority=msg.priority, correlation_id=msg.correlation_id, reply_to=msg.reply_to,
                             expiration=msg.expiration, message_id=msg.message_id, timestamp=msg.timestamp,
                             type=msg.type, app_id=msg.app_id),
            routing_key=target)  # confirmed before the original is acknowledged
        await msg.ack()
        moved += 1


async def migrate_queue(connection: AbstractRobustConnection, name: str, arguments: dict,
                        bindings: list[tuple[str, str]]) -> int:
    """Rebuilds `name` with `arguments`, keeping its messages. Returns how many were moved."""
    channel = await connection.channel(publisher_confirms=True)
    try:
        await declare_exchanges(channel)
        temp = await channel.declare_queue(name + SUFFIX, durable=True, arguments={"x-queue-type": QUORUM})
        for exchange, key in bindings:
            await temp.bind(exchange, routing_key=key)
        moved = 0
        while True:
            moved += await _move(channel, name, temp.name)
            # (quorum queues refuse `if-empty` deletes: count, then delete. What arrives in
            # between is in the bound `.migrating` queue too.)
            if await _count(channel, name) == 0:
                await channel.queue_delete(name)
                break
        # a new channel: a channel that published to the old queue keeps routing to it by
        # type, and RabbitMQ 3.10 fails the connection when the name is now a quorum queue
        await channel.close()
        channel = await connection.channel(publisher_confirms=True)
        temp = await channel.declare_queue(temp.name, durable=True, arguments={"x-queue-type": QUORUM})
        queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        for exchange, key in bindings:
            await queue.bind(exchange, routing_key=key)
        for exchange, key in bindings:
            await temp.unbind(exchange, routing_key=key)
        while True:  # unbound now: nothing else arrives in it
            await _move(channel, temp.name, name)
            if await _count(channel, temp.name) == 0:
                await channel.queue_delete(temp.name)
                return moved
    finally:
        if not channel.is_closed:
            await channel.close()


async def migrate(connection: AbstractRobustConnection, *, dry_run: bool = False) -> list[Migration]:
    """Brings every queue of the topology to the arguments this version declares."""
    out = []
    for name, arguments, bindings in wanted():
        state = await _state(connection, name, arguments)
        leftover = await _state(connection, name + SUFFIX, {"x-queue-type": QUORUM})
        if state == "needs migration" or (leftover == "ok" and state != "absent"):
            if dry_run:
                out.append(Migration(name, "needs migration"))
                continue
            out.append(Migration(name, "migrated", await migrate_queue(connection, name, arguments, bindings)))
        else:
            out.append(Migration(name, state))
    return out
