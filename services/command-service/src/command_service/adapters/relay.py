"""The outbox relay: publishes committed events to cqrs.events with publisher confirms, in
position order, then marks them published.

Only one relay publishes at a time, whatever the number of command-service replicas: each
candidate holds a dedicated connection and tries a session-level advisory lock; the holder
publishes, the others wait and try again. If the holder dies its connection closes and the
lock is released. The relay is woken by LISTEN/NOTIFY ('outbox', sent by each command
transaction at commit) and also polls, in case a notification is missed.

Publishing and marking are not atomic: after a crash between them, the same events are
published again (same message_id = eventId); consumers are idempotent by design.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from contextlib import ExitStack
from datetime import datetime, timezone

import aio_pika
import asyncpg
from aio_pika.abc import AbstractRobustConnection

from cqrs_shared import metrics, tracing
from cqrs_shared.messaging.topology import declare_exchanges
from cqrs_shared.topology import EVENTS_EXCHANGE

log = logging.getLogger(__name__)

RELAY_LOCK_KEY = 0x0C9F5_0B0C  # advisory lock id of the outbox relay


# what both the relay and the replay read of a stored event
EVENT_COLUMNS = ("position, envelope::text AS envelope, aggregate_type, aggregate_id, event_type, event_id, "
                 "created_at, trace_context")


def routing_key_of(row) -> str:
    return f"{row['aggregate_type']}.{row['event_type']}"


def event_message(row, **extra_headers) -> aio_pika.Message:
    """A stored event as published: persistent, message_id = eventId, with the headers that
    consumers order and deduplicate by, and the current trace context (`traceparent`)."""
    extra_headers = tracing.inject(dict(extra_headers))
    return aio_pika.Message(
        body=row["envelope"].encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(row["event_id"]),
        type=row["event_type"],
        headers={"x-aggregate-id": row["aggregate_id"], "x-position": row["position"], **extra_headers},
    )


def _stored_context(row) -> dict[str, str]:
    stored = row["trace_context"]
    if isinstance(stored, str):  # a connection without the jsonb codec
        import json
        stored = json.loads(stored)
    return stored if isinstance(stored, dict) else {}


async def refresh_outbox_metrics(pool) -> None:
    """Outbox backlog, the age of its oldest event and the store's head position (read at
    scrape time; the partial index on unpublished events keeps it cheap)."""
    row = await pool.fetchrow(
        "SELECT count(*) AS backlog, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age, "
        "(SELECT coalesce(max(position), 0) FROM events) AS head FROM events WHERE published_at IS NULL")
    metrics.OUTBOX_BACKLOG.set(row["backlog"])
    metrics.OUTBOX_OLDEST_AGE.set(max(row["age"], 0.0))
    metrics.EVENT_STORE_POSITION.set(row["head"])


class OutboxRelay:
    def __init__(self, *, dsn: str, amqp: AbstractRobustConnection, batch: int = 500,
                 poll_seconds: float = 1.0, crash_after_publish: bool = False) -> None:
        self._dsn = dsn
        self._amqp = amqp
        self._batch = batch
        self._poll = poll_seconds
        self._crash_after_publish = crash_after_publish
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.is_leader = False
        self.healthy = True  # False while the relay loop is failing (database or broker down)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=10)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying")
                self.healthy = False
                self.is_leader = False
                await asyncio.sleep(1.0)

    async def _lead(self) -> None:
        # The relay's own writes are only the published_at marks: a mark lost in a database
        # crash means the events are published again, which consumers tolerate by design
        # (see above). So they need not wait for the WAL flush: one fsync less per batch,
        # competing with the commands' commits. The commands' commits stay synchronous.
        conn = await asyncpg.connect(self._dsn, server_settings={"synchronous_commit": "off"})
        try:
            while not self._stopping.is_set():
                self.healthy = True
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                    break
                await self._sleep(self._poll)
            else:
                return
            self.is_leader = True
            self.healthy = True
            log.info("outbox relay is the leader")
            await conn.add_listener("outbox", lambda *_: self._wake.set())
            channel = await self._amqp.channel(publisher_confirms=True)
            await declare_exchanges(channel)
            exchange = await channel.get_exchange(EVENTS_EXCHANGE)
            try:
                while not self._stopping.is_set():
                    self._wake.clear()
                    published = await self._publish_batch(conn, exchange)
                    if published < self._batch:
                        await self._sleep(self._poll)
            finally:
                if not channel.is_closed:
                    await channel.close()
        finally:
            self.is_leader = False
            await conn.close()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _publish_batch(self, conn: asyncpg.Connection, exchange) -> int:
        rows = await conn.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE published_at IS NULL ORDER BY position LIMIT $1", self._batch)
        if not rows:
            return 0
        # Published in position order on one channel (the broker keeps that order); all
        # confirms are awaited before anything is marked. Each event is published in a
        # PRODUCER span whose parent is the trace of the command that appended it.
        started = time.perf_counter()
        with ExitStack() as spans:
            messages = []
            for r in rows:
                rk = routing_key_of(r)
                spans.enter_context(tracing.span(
                    f"{rk} publish", kind=tracing.SpanKind.PRODUCER, parent=_stored_context(r), attributes={
                        "messaging.system": "rabbitmq", "messaging.operation": "publish",
                        "messaging.destination.name": EVENTS_EXCHANGE,
                        "messaging.rabbitmq.destination.routing_key": rk,
                        "messaging.message.id": str(r["event_id"]), "cqrs.position": r["position"]}))
                messages.append(event_message(r))
            await asyncio.gather(*(exchange.publish(m, routing_key=routing_key_of(r)) for m, r in zip(messages, rows)))
        confirmed = datetime.now(timezone.utc)
        metrics.OUTBOX_PUBLISH_SECONDS.observe(time.perf_counter() - started)
        for r in rows:
            metrics.OUTBOX_PUBLISHED.labels(r["event_type"]).inc()
            if r["created_at"] is not None:
                metrics.OUTBOX_DELAY_SECONDS.observe(max((confirmed - r["created_at"]).total_seconds(), 0.0))
        if self._crash_after_publish:
            log.error("fault injection: exiting after publish, before marking published")
            os._exit(17)
        await conn.execute(
            "UPDATE events SET published_at = now() WHERE position = ANY($1::bigint[])", [r["position"] for r in rows])
        return len(rows)

