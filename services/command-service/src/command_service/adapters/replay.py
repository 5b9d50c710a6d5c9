"""Re-sends stored events on request (cqrs.internal / events.replay), so a consumer whose
queue or views are newer than the history can catch up. Events go straight to the
requesting queue (default exchange), in position order, with publisher confirms, exactly as
the relay publishes them; consumers are idempotent, so overlaps with live events are
harmless.

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


def replay_consumer(connection: AbstractRobustConnection, pool: asyncpg.Pool) -> QueueConsumer:
    consumer: QueueConsumer

    async def handle(message: AbstractIncomingMessage) -> None:
        try:
            request = json.loads(message.body)
            start = int(request["fromPosition"])
            target = str(request["queue"])
            report_end = request.get("reportEnd") is True
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentFailure(f"invalid replay request: {exc}") from None
        if target not in REPLAY_TARGETS:
            raise PermanentFailure(f"replay to {target!r} is not allowed")
        sent = 0
        channel = consumer.channel
        while True:
            rows = await pool.fetch(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE position >= $1 ORDER BY position LIMIT $2", start, BATCH)
            if not rows:
                break
            await asyncio.gather(*(
                channel.default_exchange.publish(
                    event_message(r, **{"x-original-routing-key": routing_key_of(r), "x-replay": True}),
                    routing_key=target)
                for r in rows
            ))
            sent += len(rows)
            start = rows[-1]["position"] + 1
        if report_end:
            await channel.default_exchange.publish(aio_pika.Message(
                json.dumps({"replayEnd": True, "fromPosition": request["fromPosition"],
                            "lastPosition": start - 1}).encode(),
                content_type="application/json", type="ReplayEnd", headers={"x-replay-end": True},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=target)
        log.info("replayed %d event(s) from position %s to %s", sent, request["fromPosition"], target)

    consumer = QueueConsumer(connection, REPLAY_QUEUE, handle, service="command-service", prefetch=1)
    return consumer
