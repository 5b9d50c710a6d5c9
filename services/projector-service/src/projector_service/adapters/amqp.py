"""Consumes cqrs.events through QueueConsumer (retries, DLQ, per-aggregate ordering)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import aio_pika

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from pydantic import ValidationError

from cqrs_shared import logs, metrics
from cqrs_shared.contracts.envelopes import EventEnvelope
from cqrs_shared.messaging.consumer import PermanentFailure, QueueConsumer
from cqrs_shared.messaging.topology import declare_consumed_queue
from cqrs_shared.timeutil import iso_ms, utcnow
from cqrs_shared.topology import INTERNAL_EXCHANGE, PROJECTOR_QUEUE, REBUILD_QUEUE, REPLAY_ROUTING_KEY
from cqrs_shared import strict_json

from projector_service.adapters.progress import ProjectionProgress
from projector_service.application.projector import Projector
from projector_service.domain.orders import KNOWN_EVENTS, InvalidEvent

SERVICE = "projector-service"
log = logging.getLogger("projector_service")


def parse_event(body: bytes) -> EventEnvelope:
    try:
        raw = strict_json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PermanentFailure(f"body is not JSON: {str(exc)[:200]}") from None
    return event_of(raw)


def event_of(raw: Any) -> EventEnvelope:
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


async def request_replay(connection: AbstractRobustConnection, from_position: int,
                         queue: str = PROJECTOR_QUEUE.name, *, report_end: bool = False,
                         per_message: int = 1) -> None:
    """Asks the command service to re-send the stored events from `from_position` on into
    `queue` (catch-up after the queue or the views were created late, or a rebuild)."""
    channel = await connection.channel(publisher_confirms=True)
    try:
        exchange = await channel.get_exchange(INTERNAL_EXCHANGE)
        await exchange.publish(
            aio_pika.Message(json.dumps({"fromPosition": from_position, "queue": queue,
                                         **({"reportEnd": True} if report_end else {}),
                                         **({"batch": per_message} if per_message > 1 else {})}).encode(),
                             content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=REPLAY_ROUTING_KEY,
        )
    finally:
        await channel.close()


class _HistoryBatch:
    def __init__(self, feed: "AmqpHistoryFeed", events: list[EventEnvelope],
                 sources: dict[str, tuple[AbstractIncomingMessage, Any]], last: AbstractIncomingMessage) -> None:
        self.events = events
        self._feed = feed
        self._sources = sources  # event id -> (message, the event: its body, or an item of a batch)
        self._last = last

    async def done(self, invalid: Sequence[tuple[EventEnvelope, str]]) -> None:
        for event, reason in invalid:
            message, body = self._sources[event.eventId]
            await self._feed.dead_letter(message, reason, body)
        await self._last.ack(multiple=True)


class AmqpHistoryFeed:
    """The rebuild's own queue (`projector-service.rebuild`), fed by replay requests.
    Messages are taken in batches and acknowledged together once a batch is applied; a
    message that is not a valid event goes to the queue's DLQ."""

    def __init__(self, connection: AbstractRobustConnection, *, prefetch: int = 40,
                 per_message: int = 100) -> None:
        self._connection = connection
        self._prefetch = prefetch  # messages: up to prefetch * per_message events in flight
        self._per_message = per_message
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._channel: Any = None
        self._queue: Any = None
        self._tag: str | None = None
        self.replay_ends: list[int] = []  # lastPosition of each end marker received

    async def start(self) -> None:
        """Declares the queue. It is emptied and consumed only by the first `request()`: the
        rebuild asks for history only once it holds the pointer, so a rebuild that is refused
        (another one runs) never touches the queue the running one reads."""
        self._channel = await self._connection.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=self._prefetch)
        self._queue = await declare_consumed_queue(self._channel, REBUILD_QUEUE)

    async def _consume(self) -> None:
        """Empties the queue (what an interrupted rebuild left there would arrive out of
        position order), then consumes it."""
        if self._tag is None:
            await self._queue.purge()
            self._tag = await self._queue.consume(self._inbox.put)

    async def stop(self) -> None:
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception:
                pass
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def request(self, from_position: int) -> None:
        await self._consume()
        await request_replay(self._connection, from_position, REBUILD_QUEUE.name, report_end=True,
                             per_message=self._per_message)

    async def next_batch(self, max_events: int, idle_s: float) -> _HistoryBatch | None:
        try:
            if idle_s <= 0:
                first = self._inbox.get_nowait()
            else:
                first = await asyncio.wait_for(self._inbox.get(), idle_s)
        except (asyncio.TimeoutError, asyncio.QueueEmpty):
            return None
        messages = [first]
        count = self._count(first)
        while count < max_events and not self._inbox.empty():
            m = self._inbox.get_nowait()
            messages.append(m)
            count += self._count(m)
        events: list[EventEnvelope] = []
        sources: dict[str, tuple[AbstractIncomingMessage, Any]] = {}
        for m in messages:
            headers = m.headers or {}
            if headers.get("x-replay-end"):
                try:
                    self.replay_ends.append(int(json.loads(m.body)["lastPosition"]))
                except (ValueError, KeyError, TypeError) as exc:
                    await self.dead_letter(m, f"invalid replay end marker: {exc!r}")
                continue
            if headers.get("x-event-batch"):
                try:
                    items = json.loads(m.body)
                    if not isinstance(items, list):
                        raise ValueError("not a JSON array")
                except ValueError as exc:
                    await self.dead_letter(m, f"invalid event batch: {exc}")
                    continue
            else:
                items = [m.body]
            for item in items:
                try:
                    event = parse_event(item) if isinstance(item, bytes) else event_of(item)
                except PermanentFailure as exc:
                    await self.dead_letter(m, str(exc), item)
                    continue
                events.append(event)
                sources[event.eventId] = (m, item)
        return _HistoryBatch(self, events, sources, messages[-1])

    @staticmethod
    def _count(message: AbstractIncomingMessage) -> int:
        n = (message.headers or {}).get("x-event-batch")
        return n if isinstance(n, int) and n > 0 else 1

    async def dead_letter(self, message: AbstractIncomingMessage, reason: str, event: Any = None) -> None:
        """To the DLQ: the message, or one event of it (`event`: its body, or an item of a
        batch message, dead-lettered as a message of its own)."""
        headers = dict(message.headers or {})
        body = message.body
        if event is not None and headers.pop("x-event-batch", None) is not None:
            for h in ("x-first-position", "x-last-position"):
                headers.pop(h, None)
            body = json.dumps(event).encode()
        headers.update({"x-error": reason[:1000], "x-error-kind": "permanent", "x-service": SERVICE,
                        "x-attempts": 1, "x-first-failure-at": iso_ms(utcnow()),
                        "x-original-queue": REBUILD_QUEUE.name,
                        "x-original-routing-key": headers.get("x-original-routing-key") or message.routing_key or ""})
        log.warning("dead-lettering %s from %s: %s", message.message_id, REBUILD_QUEUE.name, reason)
        await self._channel.default_exchange.publish(
            aio_pika.Message(body, headers=headers,
                             content_type=message.content_type,
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=message.message_id,
                             correlation_id=message.correlation_id, type=message.type),
            routing_key=REBUILD_QUEUE.dlq)


async def connect_amqp(url: str) -> Any:
    """A robust AMQP connection (the composition root imports no driver itself)."""
    from cqrs_shared.messaging.connection import connect

    return await connect(url, name="projector-service")
