"""Dead-letter queue operations: counts grouped by error, inspect, replay, purge.

Browsing reads messages without acknowledging them and closes the channel afterwards, so
every message goes back to its DLQ. Replay republishes a dead letter to the queue it came
from (header `x-original-queue`), keeping its body, message id, correlation id, reply_to
and original routing key, so idempotency still holds; its attempt count starts again. The
dead letter is acknowledged only after the broker confirmed the republish.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from cqrs_shared.topology import ALL_CONSUMED_QUEUES

RESET_HEADERS = ("x-attempts", "x-error", "x-error-kind", "x-last-error", "x-first-failure-at",
                 # set by the broker when it dead-lettered or redelivered the message itself
                 "x-death", "x-first-death-reason", "x-first-death-queue", "x-first-death-exchange",
                 "x-last-death-reason", "x-last-death-queue", "x-last-death-exchange", "x-delivery-count")


@dataclass
class DeadLetter:
    queue: str
    index: int
    message_id: str | None
    routing_key: str | None
    headers: dict[str, Any]
    body: bytes
    content_type: str | None = None

    @property
    def error(self) -> str:
        raw = self.headers.get("x-error")
        if raw is None and self.headers.get("x-first-death-reason") is not None:
            # dead-lettered by the broker itself: a quorum queue's delivery limit
            return (f"{_text(self.headers['x-first-death-reason'])}: delivered too many times "
                    "(its consumer crashed or lost the connection while handling it)")
        return _text(raw or "")

    @property
    def original_queue(self) -> str | None:
        return _text(self.headers.get("x-original-queue") or self.headers.get("x-first-death-queue"))

    def as_dict(self) -> dict[str, Any]:
        return {"queue": self.queue, "index": self.index, "messageId": self.message_id,
                "error": self.error, "service": _text(self.headers.get("x-service")),
                "attempts": self.headers.get("x-attempts"),
                "firstFailureAt": _text(self.headers.get("x-first-failure-at")),
                "originalQueue": self.original_queue,
                "originalRoutingKey": _text(self.headers.get("x-original-routing-key")),
                "body": self.body.decode(errors="replace")}


def _text(v: Any) -> Any:
    return v.decode(errors="replace") if isinstance(v, bytes) else v


def _letter(dlq: str, index: int, msg: AbstractIncomingMessage) -> DeadLetter:
    return DeadLetter(dlq, index, msg.message_id, msg.routing_key, dict(msg.headers or {}), msg.body,
                      msg.content_type)


@dataclass
class QueueSummary:
    queue: str
    count: int
    by_error: Counter = field(default_factory=Counter)


def dlq_names() -> list[str]:
    return [spec.dlq for spec in ALL_CONSUMED_QUEUES]


async def browse(connection: AbstractRobustConnection, dlq: str, limit: int = 10_000) -> list[DeadLetter]:
    """Reads up to `limit` dead letters without removing any."""
    channel = await connection.channel()
    out: list[DeadLetter] = []
    try:
        queue = await channel.declare_queue(dlq, passive=True)
        while len(out) < limit:
            msg = await queue.get(no_ack=False, fail=False)
            if msg is None:
                break
            out.append(_letter(dlq, len(out), msg))
    finally:
        await channel.close()  # unacknowledged messages return to the queue
    return out


async def summary(connection: AbstractRobustConnection, dlqs: list[str] | None = None) -> list[QueueSummary]:
    result = []
    for name in dlqs or dlq_names():
        try:
            letters = await browse(connection, name)
        except aio_pika.exceptions.ChannelClosed:
            result.append(QueueSummary(name, 0))  # not declared yet
            continue
        result.append(QueueSummary(name, len(letters), Counter(d.error for d in letters)))
    return result


async def replay(connection: AbstractRobustConnection, dlq: str,
                 select: Callable[[DeadLetter], bool] = lambda d: True, limit: int | None = None) -> int:
    """Moves the selected dead letters back to their original queues. Returns how many."""
    channel = await connection.channel(publisher_confirms=True)
    moved = 0
    keep: list[AbstractIncomingMessage] = []
    try:
        queue = await channel.declare_queue(dlq, passive=True)
        index = 0
        while limit is None or moved < limit:
            msg = await queue.get(no_ack=False, fail=False)
            if msg is None:
                break
            letter = _letter(dlq, index, msg)
            index += 1
            target = letter.original_queue
            if not target or not select(letter):
                keep.append(msg)
                continue
            headers = {k: v for k, v in letter.headers.items() if k not in RESET_HEADERS}
            headers["x-replayed-from"] = dlq
            await channel.default_exchange.publish(
                aio_pika.Message(msg.body, headers=headers, content_type=msg.content_type,
                                 content_encoding=msg.content_encoding, message_id=msg.message_id,
                                 correlation_id=msg.correlation_id, reply_to=msg.reply_to, type=msg.type,
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=target)
            await msg.ack()
            moved += 1
        for msg in keep:
            await msg.nack(requeue=True)
    finally:
        await channel.close()
    return moved


async def purge(connection: AbstractRobustConnection, dlq: str) -> int:
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(dlq, passive=True)
        result = await queue.purge()
        return int(result.message_count)
    finally:
        await channel.close()

