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

import aio_pika
import asyncpg
from aio_pika.abc import AbstractRobustConnection

from cqrs_shared.messaging.topology import declare_exchanges
from cqrs_shared.topology import EVENTS_EXCHANGE

log = logging.getLogger(__name__)

RELAY_LOCK_KEY = 0x0C9F5_0B0C  # advisory lock id of the outbox relay


# what both the relay and the replay read of a stored event
EVENT_COLUMNS = "position, envelope::text AS envelope, aggregate_type, aggregate_id, event_type, event_id"


def routing_key_of(row) -> str:
    return f"{row['aggregate_type']}.{row['event_type']}"


def event_message(row, **extra_headers) -> aio_pika.Message:
    """A stored event as published: persistent, message_id = eventId, with the headers that
    consumers order and deduplicate by."""
    return aio_pika.Message(
        body=row["envelope"].encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(row["event_id"]),
        type=row["event_type"],
        headers={"x-aggregate-id": row["aggregate_id"], "x-position": row["position"], **extra_headers},
    )


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
        conn = await asyncpg.connect(self._dsn)
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
        # confirms are awaited before anything is marked.
        await asyncio.gather(*(exchange.publish(event_message(r), routing_key=routing_key_of(r)) for r in rows))
        if self._crash_after_publish:
            log.error("fault injection: exiting after publish, before marking published")
            os._exit(17)
        await conn.execute(
            "UPDATE events SET published_at = now() WHERE position = ANY($1::bigint[])", [r["position"] for r in rows])
        return len(rows)

