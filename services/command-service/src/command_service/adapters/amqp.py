"""Inbound AMQP adapter: the command queue, RPC style."""

from __future__ import annotations

import json
import time

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from command_service.application.service import CommandService, rejected
from cqrs_shared import metrics
from cqrs_shared.contracts.commands import COMMANDS
from cqrs_shared.contracts.errors import INTERNAL_ERROR, UNAVAILABLE
from cqrs_shared.messaging.consumer import QueueConsumer, original_routing_key
from cqrs_shared.topology import COMMAND_QUEUE



def _command_id(message: AbstractIncomingMessage) -> str | None:
    try:
        value = json.loads(message.body).get("commandId")
    except (ValueError, AttributeError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, str) else None


def _outcome(reply: dict) -> str:
    """`accepted`, or the error code of a rejection (a bounded set)."""
    if reply.get("status") == "accepted":
        return "accepted"
    return str((reply.get("error") or {}).get("code") or "rejected")


def command_consumer(connection: AbstractRobustConnection, service: CommandService, *, prefetch: int) -> QueueConsumer:
    consumer: QueueConsumer

    async def handle(message: AbstractIncomingMessage) -> None:
        routing_key = original_routing_key(message)
        started = time.perf_counter()
        reply = await service.handle(message.body, routing_key, message.content_type)
        kind = metrics.label(routing_key, COMMANDS)
        metrics.COMMAND_SECONDS.labels(kind).observe(time.perf_counter() - started)
        metrics.COMMANDS.labels(kind, _outcome(reply)).inc()
        await consumer.reply(message, reply)

    async def give_up(message: AbstractIncomingMessage, exc: BaseException) -> None:
        metrics.COMMANDS.labels(metrics.label(original_routing_key(message), COMMANDS), INTERNAL_ERROR).inc()
        await consumer.reply(message, rejected(
            _command_id(message), INTERNAL_ERROR, "the command could not be processed; it was dead-lettered"))

    async def past_deadline(message: AbstractIncomingMessage) -> None:
        metrics.COMMANDS.labels(metrics.label(original_routing_key(message), COMMANDS), UNAVAILABLE).inc()
        await consumer.reply(message, rejected(
            _command_id(message), UNAVAILABLE,
            "the request's deadline (x-deadline) passed before it could be processed; it was not executed"))

    consumer = QueueConsumer(connection, COMMAND_QUEUE, handle, service="command-service",
                             prefetch=prefetch, on_give_up=give_up, on_deadline=past_deadline)
    return consumer
