"""Consumes cqrs.events through QueueConsumer (retries, DLQ, per-aggregate ordering)."""

from __future__ import annotations

import json

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from pydantic import ValidationError

from cqrs_shared.contracts.envelopes import EventEnvelope
from cqrs_shared.messaging.consumer import PermanentFailure, QueueConsumer
from cqrs_shared.topology import PROJECTOR_QUEUE

from projector_service.application.projector import Projector
from projector_service.domain.orders import KNOWN_EVENTS, InvalidEvent

SERVICE = "projector-service"


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


def make_consumer(connection: AbstractRobustConnection, projector: Projector, *, prefetch: int) -> QueueConsumer:
    async def handler(message: AbstractIncomingMessage) -> None:
        event = parse_event(message.body)
        try:
            await projector.handle(event)
        except InvalidEvent as exc:
            raise PermanentFailure(str(exc)) from exc

    return QueueConsumer(connection, PROJECTOR_QUEUE, handler, service=SERVICE,
                         prefetch=prefetch, key_of=aggregate_key)
