"""Re-sends stored events on request (cqrs.internal / events.replay), so a consumer whose
queue or views are newer than the history can catch up. Events go straight to the
requesting queue (default exchange), in position order, with publisher confirms, exactly as
the relay publishes them; consumers are idempotent, so overlaps with live events are
harmless.

A request with `"batch": N` (1..1000) gets the events N to a message, as a JSON array
(`type` `EventBatch`, header `x-event-batch`): for consumers that read history in bulk.
A request with `"reportEnd": true` is answered, after its last event, by an end marker in the
same queue (`type` `ReplayEnd`, header `x-replay-end`, body `{"replayEnd": true,
"fromPosition": F, "lastPosition": L}`): whoever reads the queue in order knows that every
event up to L that existed when the replay ran has been delivered before it."""

from __future__ import annotations

import asyncio
import json
import logging

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from command_service.adapters.relay import EVENT_COLUMNS, event_message, routing_key_of
from cqrs_shared.messaging.consumer import PermanentFailure, QueueConsumer
from cqrs_shared.topology import REPLAY_QUEUE, REPLAY_TARGETS

log = logging.getLogger(__name__)
BATCH = 1000
MAX_PER_MESSAGE = 1000


def batch_message(rows) -> aio_pika.Message:
    """Several stored events in one message (a JSON array of envelopes, in position order):
    for a consumer that reads history in bulk (the rebuild); far less per-message work for
    the broker and both clients."""
    return aio_pika.Message(
        body=b"[" + b",".join(r["envelope"].encode() for r in rows) + b"]",
        content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        type="EventBatch", headers={"x-event-batch": len(rows), "x-replay": True,
                                    "x-first-position": rows[0]["position"], "x-last-position": rows[-1]["position"]})


def replay_consumer(connection: AbstractRobustConnection, pool: asyncpg.Pool) -> QueueConsumer:
    consumer: QueueConsumer

    async def handle(message: AbstractIncomingMessage) -> None:
        try:
            request = json.loads(message.body)
            start = int(request["fromPosition"])
            target = str(request["queue"])
            report_end = request.get("reportEnd") is True
            per_message = int(request.get("batch", 1))
            if not 1 <= per_message <= MAX_PER_MESSAGE:
                raise ValueError(f"batch must be 1..{MAX_PER_MESSAGE}")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise PermanentFailure(f"invalid replay request: {exc}") from None
        if target not in REPLAY_TARGETS:
            raise PermanentFailure(f"replay to {target!r} is not allowed")
        sent = 0
        channel = consumer.channel

        def page(after: int) -> asyncio.Future:
            return asyncio.ensure_future(pool.fetch(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE position >= $1 ORDER BY position LIMIT $2", after, BATCH))

        following = page(start)
        try:
            while True:
                rows = await following
                if not rows:
                    break
                start = rows[-1]["position"] + 1
                following = page(start)  # the next page is read while this one is published
                if per_message == 1:
                    messages = [event_message(r, **{"x-original-routing-key": routing_key_of(r), "x-replay": True})
                                for r in rows]
                else:
                    messages = [batch_message(rows[i:i + per_message]) for i in range(0, len(rows), per_message)]
                await asyncio.gather(*(channel.default_exchange.publish(m, routing_key=target) for m in messages))
                sent += len(rows)
        finally:
            if not following.done():
                following.cancel()
            await asyncio.gather(following, return_exceptions=True)
        if report_end:
            await channel.default_exchange.publish(aio_pika.Message(
                json.dumps({"replayEnd": True, "fromPosition": request["fromPosition"],
                            "lastPosition": start - 1}).encode(),
                content_type="application/json", type="ReplayEnd", headers={"x-replay-end": True},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=target)
        log.info("replayed %d event(s) from position %s to %s", sent, request["fromPosition"], target)

    consumer = QueueConsumer(connection, REPLAY_QUEUE, handle, service="command-service", prefetch=1)
    return consumer
