"""A queue consumer with retries with backoff and a dead-letter queue.

Attempts are counted in the `x-attempts` header of the message itself (never in process
memory): a transient failure republishes the message to the retry queue of the next delay
and acknowledges the original; when the delays are used up, or the failure is permanent,
the message goes to `<queue>.dlq` with headers naming the error, the service, the attempts
and the first failure time. Publishing to the retry queue or DLQ uses publisher confirms
before the original is acknowledged, so nothing acknowledged is lost.

Messages that share a key (`key_of`) are handled one after the other, in arrival order;
others run concurrently up to the prefetch count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aio_pika.exceptions
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection

from cqrs_shared import logs, metrics, tracing
from cqrs_shared.messaging.rpc import send_reply
from cqrs_shared.messaging.topology import declare_consumed_queue
from cqrs_shared.timeutil import iso_ms, utcnow
from cqrs_shared.topology import ConsumedQueue

log = logging.getLogger(__name__)


class PermanentFailure(Exception):
    """The message can never be processed (not JSON, missing fields, unknown type)."""


def original_routing_key(message: AbstractIncomingMessage) -> str:
    """The routing key the message was first published with: a retried message comes back
    from its retry queue with the queue's name as routing key."""
    rk = (message.headers or {}).get("x-original-routing-key") or message.routing_key or ""
    return rk.decode() if isinstance(rk, bytes) else str(rk)


def deadline_passed(message: AbstractIncomingMessage) -> bool:
    """True when the request carries an `x-deadline` header (ISO 8601 UTC) that has passed."""
    raw = (message.headers or {}).get("x-deadline")
    if raw is None:
        return False
    if isinstance(raw, bytes):
        raw = raw.decode(errors="replace")
    try:
        deadline = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return False
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=timezone.utc)
    return datetime.now(timezone.utc) > deadline


Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]
GiveUp = Callable[[AbstractIncomingMessage, BaseException], Awaitable[None]]


class QueueConsumer:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        spec: ConsumedQueue,
        handler: Handler,
        *,
        service: str,
        prefetch: int = 64,
        key_of: Callable[[AbstractIncomingMessage], str | None] | None = None,
        on_give_up: GiveUp | None = None,
        on_deadline: Callable[[AbstractIncomingMessage], Awaitable[None]] | None = None,
        type_of: Callable[[AbstractIncomingMessage], str] | None = None,
    ) -> None:
        self._connection = connection
        self._spec = spec
        self._handler = handler
        self._service = service
        self._prefetch = prefetch
        self._key_of = key_of
        self._on_give_up = on_give_up
        self._on_deadline = on_deadline
        self._tails: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._channel: AbstractRobustChannel | None = None
        self._tag: str | None = None
        self._queue = None
        # metrics label of a message: its routing key when it is one the queue is bound to
        self._type_of = type_of or self._routing_key_label
        self._known_keys = frozenset(k for k in spec.routing_keys if "*" not in k and "#" not in k)
        self._in_flight = metrics.IN_FLIGHT.labels(service, spec.name)
        self._depth = QueueDepth(connection, spec)
        self._remove_refresher = lambda: None

    async def start(self) -> None:
        self._channel = await self._connection.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=self._prefetch)
        self._queue = await declare_consumed_queue(self._channel, self._spec)
        self._tag = await self._queue.consume(self._on_message)
        self._remove_refresher = metrics.on_scrape(self._depth.refresh)

    async def stop(self, timeout: float = 20.0) -> None:
        """Stop taking messages, finish what is held, then close the channel."""
        self._remove_refresher()
        await self._depth.close()
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception:  # channel may already be gone
                pass
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    @property
    def channel(self) -> AbstractRobustChannel:
        assert self._channel is not None, "consumer not started"
        return self._channel

    async def reply(self, request: AbstractIncomingMessage, body: dict[str, Any]) -> None:
        """RPC reply to `request` on this consumer's channel (no-op without reply_to)."""
        assert self._channel is not None
        await send_reply(self._channel, request, body)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        key = self._key_of(message) if self._key_of else None
        task = asyncio.ensure_future(self._run_in_order(key, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_in_order(self, key: str | None, message: AbstractIncomingMessage) -> None:
        if key is None:
            await self._process(message)
            return
        previous = self._tails.get(key)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = mine
        try:
            if previous is not None:
                await previous
            await self._process(message)
        finally:
            mine.set_result(None)
            if self._tails.get(key) is mine:
                del self._tails[key]

    def _routing_key_label(self, message: AbstractIncomingMessage) -> str:
        return metrics.label(original_routing_key(message), self._known_keys)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        """Handles one message inside a CONSUMER span whose parent is the trace context of
        its headers, and counts it (metrics labelled by service, queue, type, outcome)."""
        kind = self._type_of(message)
        with tracing.span(f"{kind} process", kind=tracing.SpanKind.CONSUMER, parent=message.headers, attributes={
            "messaging.system": "rabbitmq", "messaging.operation": "process",
            "messaging.destination.name": self._spec.name,
            "messaging.rabbitmq.destination.routing_key": original_routing_key(message),
            "messaging.message.id": message.message_id,
            "messaging.message.conversation_id": message.correlation_id,
            "cqrs.attempt": self._attempts(message),
        }) as span:
            self._in_flight.inc()
            started = time.perf_counter()
            try:
                outcome = await self._process_guarded(message)
            finally:
                self._in_flight.dec()
                metrics.HANDLER_SECONDS.labels(self._service, self._spec.name, kind).observe(
                    time.perf_counter() - started)
            metrics.CONSUMED.labels(self._service, self._spec.name, kind, outcome).inc()
            if outcome != "acked":
                tracing.mark_error(span, outcome)

    async def _process_guarded(self, message: AbstractIncomingMessage) -> str:
        try:
            return await self._process_in_span(message)
        except asyncio.CancelledError:
            raise
        except (aio_pika.exceptions.AMQPError, aio_pika.exceptions.ChannelInvalidStateError, ConnectionError) as exc:
            # The channel went away (broker restart, connection loss) while the message was
            # handled or passed on: it was not acknowledged, so the broker delivers it again
            # (to this process once reconnected, or to another replica). Handlers are
            # idempotent, so a second delivery is harmless.
            log.warning("channel lost while handling a message from %s (%r); it was not acknowledged "
                        "and will be delivered again", self._spec.name, exc)
            if self._channel is not None and not self._channel.is_closed:
                try:  # the channel is still open (e.g. a publish was refused): give it back now
                    await message.nack(requeue=True)
                except Exception:  # noqa: BLE001 - the delivery went with its channel
                    pass
            return "channel_lost"

    async def _process_in_span(self, message: AbstractIncomingMessage) -> str:
        logs.bind(messageId=message.message_id, routingKey=original_routing_key(message),
                  amqpCorrelationId=message.correlation_id)
        if self._on_deadline is not None and deadline_passed(message):
            # a request past its deadline is not executed; its client gets a clear answer
            try:
                await self._on_deadline(message)
            finally:
                await message.ack()
            return "expired"
        try:
            await self._handler(message)
        except PermanentFailure as exc:
            await self._dead_letter(message, exc, permanent=True)
            return "dead_lettered"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # transient: retry with backoff
            log.warning("transient failure on %s: %r", self._spec.name, exc)
            return await self._retry(message, exc)
        else:
            await message.ack()
            return "acked"

    def _attempts(self, message: AbstractIncomingMessage) -> int:
        return int((message.headers or {}).get("x-attempts", 0)) + 1

    def _copy(self, message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
        return aio_pika.Message(
            body=message.body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            message_id=message.message_id,
            timestamp=message.timestamp,
            type=message.type,
            user_id=None,
            app_id=message.app_id,
            expiration=message.expiration,
        )

    async def _retry(self, message: AbstractIncomingMessage, exc: BaseException) -> str:
        attempts = self._attempts(message)
        delays = self._spec.retry_delays_ms
        if attempts > len(delays):
            await self._dead_letter(message, exc, permanent=False)
            return "dead_lettered"
        headers = dict(message.headers or {})
        headers["x-attempts"] = attempts
        headers.setdefault("x-first-failure-at", iso_ms(utcnow()))
        headers.setdefault("x-original-routing-key", message.routing_key or "")
        headers["x-last-error"] = f"{type(exc).__name__}: {exc}"[:1000]
        assert self._channel is not None
        await self._channel.default_exchange.publish(
            self._copy(message, headers), routing_key=self._spec.retry_queue(delays[attempts - 1])
        )
        await message.ack()
        return "retried"

    async def _dead_letter(self, message: AbstractIncomingMessage, exc: BaseException, *, permanent: bool) -> None:
        if self._on_give_up is not None:
            try:
                await self._on_give_up(message, exc)
            except Exception:
                log.exception("give-up hook failed")
        headers = dict(message.headers or {})
        headers.update(
            {
                "x-error": f"{type(exc).__name__}: {exc}"[:1000],
                "x-error-kind": "permanent" if permanent else "retries-exhausted",
                "x-service": self._service,
                "x-attempts": self._attempts(message),
                "x-first-failure-at": headers.get("x-first-failure-at") or iso_ms(utcnow()),
                "x-original-queue": self._spec.name,
                "x-original-routing-key": headers.get("x-original-routing-key") or message.routing_key or "",
            }
        )
        assert self._channel is not None
        await self._channel.default_exchange.publish(self._copy(message, headers), routing_key=self._spec.dlq)
        await message.ack()


class QueueDepth:
    """Reads a consumed queue's depth, its retry queues' and its DLQ's from the broker
    (passive declares on a channel of its own, so a missing queue cannot close the
    consumer's channel) into the cqrs_queue_* / cqrs_dlq_messages gauges; run at scrape."""

    def __init__(self, connection: AbstractRobustConnection, spec: ConsumedQueue) -> None:
        self._connection = connection
        self._spec = spec
        self._channel: Any = None
        self._lock = asyncio.Lock()

    async def _count(self, name: str) -> tuple[int, int]:
        queue = await self._channel.declare_queue(name, passive=True, robust=False)
        result = queue.declaration_result
        return result.message_count or 0, result.consumer_count or 0

    async def refresh(self) -> None:
        async with self._lock:
            if self._connection.is_closed:
                return
            if self._channel is None or self._channel.is_closed:
                self._channel = await self._connection.channel()
            spec = self._spec
            try:
                ready, consumers = await self._count(spec.name)
                metrics.QUEUE_MESSAGES.labels(spec.name).set(ready)
                metrics.QUEUE_CONSUMERS.labels(spec.name).set(consumers)
                metrics.DLQ_MESSAGES.labels(spec.name).set((await self._count(spec.dlq))[0])
                retrying = 0
                for delay in spec.retry_delays_ms:
                    retrying += (await self._count(spec.retry_queue(delay)))[0]
                metrics.RETRY_MESSAGES.labels(spec.name).set(retrying)
            except Exception:
                self._channel = None  # a failed passive declare closes the channel
                raise

    async def close(self) -> None:
        async with self._lock:
            if self._channel is not None and not self._channel.is_closed:
                try:
                    await self._channel.close()
                except Exception:  # noqa: BLE001 - the connection may be gone
                    pass
            self._channel = None
