"""RPC server on query-service.queries (QueueConsumer: retries, DLQ, give-up replies)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from cqrs_shared import logs, metrics
from cqrs_shared.contracts.errors import INTERNAL_ERROR, error_body
from cqrs_shared.messaging.consumer import QueueConsumer, original_routing_key
from cqrs_shared.messaging.rpc import send_reply
from cqrs_shared.messaging.topology import declare_exchanges
from cqrs_shared.topology import (
    INTERNAL_EXCHANGE, QUERY_QUEUE, QUERY_TYPES, WATERMARK_QUEUE_PREFIX, WATERMARK_ROUTING_KEY,
)
from cqrs_shared.viewsets import is_set_name

from query_service.application.service import QueryService
from query_service.application.watermark import Notifications

log = logging.getLogger(__name__)
SERVICE = "query-service"


def bind_ids(body: bytes) -> None:
    """Log context of one query: queryId, queryType and, when the envelope carries
    `metadata.correlationId` (optional, see docs/protocol.md), correlationId."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # the service answers why
        return
    if not isinstance(raw, dict):
        return
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    logs.bind(**{k: v[:200] for k, v in (("queryId", raw.get("queryId")), ("queryType", raw.get("queryType")),
                                          ("correlationId", meta.get("correlationId"))) if isinstance(v, str)})


def outcome(reply: dict[str, Any]) -> str:
    """`ok`, or the error code (a bounded set)."""
    if reply.get("status") == "ok":
        return "ok"
    return str((reply.get("error") or {}).get("code") or "error")


def make_consumer(connection: AbstractRobustConnection, reply_channel: AbstractChannel,
                  service: QueryService, *, prefetch: int) -> QueueConsumer:
    async def handler(message: AbstractIncomingMessage) -> None:
        routing_key = original_routing_key(message)
        bind_ids(message.body)
        started = time.perf_counter()
        body = await service.handle(message.body, routing_key, message.content_type)
        kind = metrics.label(routing_key, QUERY_TYPES)
        metrics.QUERY_SECONDS.labels(kind).observe(time.perf_counter() - started)
        result = outcome(body)
        metrics.QUERIES.labels(kind, result).inc()
        log.info("query %s", result, extra={"status": body.get("status"), "position": body.get("position")})
        if isinstance(body.get("position"), int):
            metrics.QUERY_VIEW_POSITION.set(body["position"])
        await send_reply(reply_channel, message, body)

    async def on_give_up(message: AbstractIncomingMessage, exc: BaseException) -> None:
        query_id = None
        try:
            raw = json.loads(message.body)
            query_id = raw.get("queryId") if isinstance(raw.get("queryId"), str) else None
        except Exception:
            pass
        metrics.QUERIES.labels(metrics.label(original_routing_key(message), QUERY_TYPES), INTERNAL_ERROR).inc()
        await send_reply(reply_channel, message, {
            "queryId": query_id, "status": "error", "result": None, "position": None,
            "error": error_body(INTERNAL_ERROR, "the query could not be processed"),
        })

    return QueueConsumer(connection, QUERY_QUEUE, handler, service=SERVICE,
                         prefetch=prefetch, on_give_up=on_give_up)


def _notification(body: bytes) -> tuple[str, int] | None:
    """(view set, watermark) of a watermark notification, or None when it is malformed."""
    try:
        raw = json.loads(body)
        view_set, position = raw["views"], raw["watermark"]
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, RecursionError):
        return None
    if not (isinstance(view_set, str) and is_set_name(view_set)
            and isinstance(position, int) and not isinstance(position, bool) and position >= 0):
        return None
    return view_set, position


async def subscribe_watermarks(connection: AbstractRobustConnection, instance: str, notifications: Notifications,
                               poke: Callable[[], None]) -> AbstractQueue:
    """This process's queue of the projectors' watermark notifications (exclusive: it goes with
    the connection; bounded: a stalled process keeps only the newest), consumed without acks
    (losing one only delays the next). Each notification is noted and wakes the waiters."""
    channel = await connection.channel()
    await declare_exchanges(channel)
    name = WATERMARK_QUEUE_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "-", instance)[:200]
    queue = await channel.declare_queue(name, durable=False, exclusive=True, auto_delete=True,
                                        arguments={"x-max-length": 100, "x-overflow": "drop-head"})
    await queue.bind(INTERNAL_EXCHANGE, routing_key=WATERMARK_ROUTING_KEY)

    async def on_notification(message: AbstractIncomingMessage) -> None:
        parsed = _notification(message.body)
        if parsed is None:
            log.warning("ignored a malformed watermark notification")
            return
        notifications.note(*parsed)
        poke()

    await queue.consume(on_notification, no_ack=True)
    return queue


async def connect_amqp(url: str) -> Any:
    """A robust AMQP connection (the composition root imports no driver itself)."""
    from cqrs_shared.messaging.connection import connect

    return await connect(url, name="query-service")
