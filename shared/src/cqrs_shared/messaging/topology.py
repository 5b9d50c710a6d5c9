"""Declares the exchanges and queues of cqrs_shared.topology on a channel."""

from __future__ import annotations

import aio_pika
import aio_pika.exceptions
from aio_pika.abc import AbstractChannel, AbstractQueue

from cqrs_shared.topology import (
    ALL_CONSUMED_QUEUES,
    COMMANDS_EXCHANGE,
    EVENTS_EXCHANGE,
    INTERNAL_EXCHANGE,
    QUERIES_EXCHANGE,
    ConsumedQueue,
)


async def declare_exchanges(channel: AbstractChannel) -> None:
    for name in (COMMANDS_EXCHANGE, QUERIES_EXCHANGE):
        ae = await channel.declare_exchange(f"{name}.unrouted", aio_pika.ExchangeType.FANOUT, durable=True)
        await channel.declare_exchange(
            name, aio_pika.ExchangeType.DIRECT, durable=True, arguments={"alternate-exchange": ae.name}
        )
    await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(INTERNAL_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)


async def declare_all(channel: AbstractChannel) -> None:
    """Every exchange and every service's queues. Each service declares all of it at start,
    so that no event is published before the projector's queue exists to keep it."""
    for spec in ALL_CONSUMED_QUEUES:
        await _declare_queue(channel, spec)


async def declare_consumed_queue(channel: AbstractChannel, spec: ConsumedQueue) -> AbstractQueue:
    """The whole topology, then this queue (with its bindings, DLQ and retry queues)."""
    await declare_exchanges(channel)
    await declare_all(channel)
    return await _declare_queue(channel, spec)


class QueueMismatch(RuntimeError):
    """A queue exists on the broker with other arguments than this version declares (e.g. a
    classic queue from an older version, now a quorum queue). Never resolved by deleting
    the queue: it may hold messages."""

    def __init__(self, name: str, arguments: dict, cause: Exception) -> None:
        super().__init__(
            f"queue {name!r} exists on the broker with other arguments than this version declares "
            f"({arguments}); the broker said: {cause}. It is left as it is (it may hold messages). "
            "Stop the services and run `cqrsctl queues migrate` to move its messages to a queue "
            "declared the new way (docs/operations.md, 'Upgrading to quorum queues').")
        self.queue = name


async def declare_queue(channel: AbstractChannel, name: str, arguments: dict) -> AbstractQueue:
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except aio_pika.exceptions.ChannelPreconditionFailed as exc:
        raise QueueMismatch(name, arguments, exc) from None


async def _declare_queue(channel: AbstractChannel, spec: ConsumedQueue) -> AbstractQueue:
    queue = await declare_queue(channel, spec.name, spec.arguments)
    for exchange, key in spec.bindings():
        await queue.bind(exchange, routing_key=key)
    await declare_queue(channel, spec.dlq, spec.dlq_arguments)
    for delay in spec.retry_delays_ms:
        # expired messages go back to the main queue through the default exchange
        await declare_queue(channel, spec.retry_queue(delay), spec.retry_arguments(delay))
    return queue
