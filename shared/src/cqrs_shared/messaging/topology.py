"""Declares the exchanges and queues of cqrs_shared.topology on a channel."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from cqrs_shared.topology import COMMANDS_EXCHANGE, EVENTS_EXCHANGE, QUERIES_EXCHANGE, ConsumedQueue


async def declare_exchanges(channel: AbstractChannel) -> None:
    for name in (COMMANDS_EXCHANGE, QUERIES_EXCHANGE):
        ae = await channel.declare_exchange(f"{name}.unrouted", aio_pika.ExchangeType.FANOUT, durable=True)
        await channel.declare_exchange(
            name, aio_pika.ExchangeType.DIRECT, durable=True, arguments={"alternate-exchange": ae.name}
        )
    await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)


async def declare_consumed_queue(channel: AbstractChannel, spec: ConsumedQueue) -> AbstractQueue:
    """The queue, its bindings, its dead-letter queue and its retry queues."""
    await declare_exchanges(channel)
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
