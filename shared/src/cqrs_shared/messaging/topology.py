"""Declares the exchanges and queues of cqrs_shared.topology on a channel."""

from __future__ import annotations

import aio_pika
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


async def _declare_queue(channel: AbstractChannel, spec: ConsumedQueue) -> AbstractQueue:
    queue = await channel.declare_queue(spec.name, durable=True)
    for key in spec.routing_keys:
        await queue.bind(spec.exchange, routing_key=key)
    if spec.alternate_exchange:
        await queue.bind(spec.alternate_exchange, routing_key="")
    await channel.declare_queue(spec.dlq, durable=True)
    for delay in spec.retry_delays_ms:
        # expired messages go back to the main queue through the default exchange
        await channel.declare_queue(
            spec.retry_queue(delay),
            durable=True,
            arguments={
                "x-message-ttl": delay,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": spec.name,
            },
        )
    return queue
