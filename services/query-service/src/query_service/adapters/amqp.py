"""RPC server on query-service.queries (QueueConsumer: retries, DLQ, give-up replies)."""

from __future__ import annotations

import json
import logging
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from cqrs_shared.contracts.errors import INTERNAL_ERROR, error_body
from cqrs_shared.messaging.consumer import QueueConsumer, original_routing_key
from cqrs_shared.messaging.rpc import send_reply
from cqrs_shared.topology import QUERY_QUEUE

from query_service.application.service import QueryService

log = logging.getLogger(__name__)
SERVICE = "query-service"


def make_consumer(connection: AbstractRobustConnection, reply_channel: AbstractChannel,
                  service: QueryService, *, prefetch: int) -> QueueConsumer:
    async def handler(message: AbstractIncomingMessage) -> None:
        body = await service.handle(message.body, original_routing_key(message))
        await send_reply(reply_channel, message, body)

    async def on_give_up(message: AbstractIncomingMessage, exc: BaseException) -> None:
        query_id = None
        try:
            raw = json.loads(message.body)
            query_id = raw.get("queryId") if isinstance(raw.get("queryId"), str) else None
        except Exception:
            pass
        await send_reply(reply_channel, message, {
            "queryId": query_id, "status": "error", "result": None, "position": None,
            "error": error_body(INTERNAL_ERROR, "the query could not be processed"),
        })

    return QueueConsumer(connection, QUERY_QUEUE, handler, service=SERVICE,
                         prefetch=prefetch, on_give_up=on_give_up)


async def connect_amqp(url: str) -> Any:
    """A robust AMQP connection (the composition root imports no driver itself)."""
    from cqrs_shared.messaging.connection import connect

    return await connect(url, name="query-service")
