"""Consumes cqrs.events through QueueConsumer (retries, DLQ, per-aggregate ordering)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

import aio_pika

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from pydantic import ValidationError

from cqrs_shared import logs, metrics
from cqrs_shared.contracts.envelopes import EventEnvelope
from cqrs_shared.messaging.consumer import PermanentFailure, QueueConsumer
from cqrs_shared.topology import INTERNAL_EXCHANGE, PROJECTOR_QUEUE, REPLAY_ROUTING_KEY

from projector_service.adapters.progress import ProjectionProgress
from projector_service.application.projector import Projector
from projector_service.domain.orders import KNOWN_EVENTS, InvalidEvent

SERVICE = "projector-service"
log = logging.getLogger("projector_service")


def parse_event(body: bytes) -> EventEnvelope:
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PermanentFailure(f"body is not JSON: {exc}") from exc
    try:
        event = EventEnvelope.model_validate(raw)
    except ValidationError as exc:
        raise PermanentFailure(f"invalid event envelope: {exc.errors(include_url=False)}") from exc
    if event.eventType not in KNOWN_EVENTS:
        raise PermanentFailure(f"unknown event type {event.eventType!r}")
    return event


def aggregate_key(message: AbstractIncomingMessage) -> str | None:
    key = (message.headers or {}).get("x-aggregate-id")
    if isinstance(key, bytes):
        key = key.decode(errors="replace")
    if key:
        return str(key)
    try:  # events from an older relay without the header
        agg = json.loads(message.body).get("aggregateId")
    except Exception:
        return None
    return agg if isinstance(agg, str) else None


def committed_at(event: EventEnvelope) -> datetime | None:
    try:
        at = datetime.fromisoformat(event.timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def event_type_label(message: AbstractIncomingMessage) -> str:
    """Metrics label: the event type (AMQP `type`, set by the relay) when it is a known one."""
    return metrics.label(message.type, KNOWN_EVENTS)


def make_consumer(connection: AbstractRobustConnection, projector: Projector, *, prefetch: int,
                  progress: ProjectionProgress | None = None) -> QueueConsumer:
    async def handler(message: AbstractIncomingMessage) -> None:
        event = parse_event(message.body)
        logs.bind(eventId=event.eventId, eventType=event.eventType, aggregateId=event.aggregateId,
                  position=event.position, correlationId=event.correlationId, causationId=event.causationId)
        at = committed_at(event)
        fresh = progress is not None and at is not None and event.position > progress.watermark
        if fresh:
            progress.received(event.position, at)
        try:
            changed = await projector.handle(event)
        except InvalidEvent as exc:
            raise PermanentFailure(str(exc)) from exc
        # "changed": the order view changed; "unchanged": a duplicate, or an event that only
        # sets customer/product views (idempotent writes)
        result = "changed" if changed else "unchanged"
        metrics.PROJECTED.labels(event.eventType, result).inc()
        log.info("event %s projected", event.eventType, extra={"result": result})
        if fresh:
            progress.applied(at)

    return QueueConsumer(connection, PROJECTOR_QUEUE, handler, service=SERVICE,
                         prefetch=prefetch, key_of=aggregate_key, type_of=event_type_label)


async def request_replay(connection: AbstractRobustConnection, from_position: int) -> None:
    """Asks the command service to re-send the stored events from `from_position` on into
    this projector's queue (catch-up after the queue or the views were created late)."""
    channel = await connection.channel(publisher_confirms=True)
    try:
        exchange = await channel.get_exchange(INTERNAL_EXCHANGE)
        await exchange.publish(
            aio_pika.Message(json.dumps({"fromPosition": from_position, "queue": PROJECTOR_QUEUE.name}).encode(),
                             content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=REPLAY_ROUTING_KEY,
        )
    finally:
        await channel.close()


async def connect_amqp(url: str) -> Any:
    """A robust AMQP connection (the composition root imports no driver itself)."""
    from cqrs_shared.messaging.connection import connect

    return await connect(url, name="projector-service")
