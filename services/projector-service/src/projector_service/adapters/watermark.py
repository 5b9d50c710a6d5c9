"""Watermark notifications (cqrs_shared.topology, WATERMARK_ROUTING_KEY): after each advance of
the live set's watermark, and as a heartbeat, the projector tells the query services how far
the views are. Transient and unconfirmed: a lost notification is repaired by the next advance
or heartbeat, and the query services fall back to reading MongoDB when none arrive."""

from __future__ import annotations

import asyncio
import json
import logging

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustConnection

from cqrs_shared.messaging.topology import declare_exchanges
from cqrs_shared.topology import INTERNAL_EXCHANGE, WATERMARK_HEARTBEAT_S, WATERMARK_ROUTING_KEY

log = logging.getLogger(__name__)


def notification(view_set: str, position: int) -> aio_pika.Message:
    return aio_pika.Message(json.dumps({"views": view_set, "watermark": position}).encode(),
                            content_type="application/json", delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT)


class WatermarkAnnouncer:
    def __init__(self, connection: AbstractRobustConnection, heartbeat_s: float = WATERMARK_HEARTBEAT_S) -> None:
        self._connection = connection
        self._heartbeat_s = heartbeat_s
        self._exchange: AbstractExchange | None = None
        self._latest: tuple[str, int] | None = None  # the live set and its highest watermark announced
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        channel = await self._connection.channel(publisher_confirms=False)
        await declare_exchanges(channel)
        self._exchange = await channel.get_exchange(INTERNAL_EXCHANGE)
        self._task = asyncio.create_task(self._heartbeat(), name="watermark-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def announce(self, view_set: str, position: int) -> None:
        """The live set `view_set` has applied everything up to `position` (called after the
        watermark document was written, so a reader that trusts it never gets ahead of the
        views). Never raises: the projection does not depend on it."""
        if self._latest is not None and self._latest[0] == view_set:
            position = max(position, self._latest[1])
        self._latest = (view_set, position)
        await self._publish(view_set, position)

    async def _publish(self, view_set: str, position: int) -> None:
        if self._exchange is None:
            return
        try:
            await self._exchange.publish(notification(view_set, position), routing_key=WATERMARK_ROUTING_KEY)
        except Exception as exc:  # broker away: the next advance or heartbeat repeats it
            log.debug("watermark notification not sent: %r", exc)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            if self._latest is not None:
                await self._publish(*self._latest)
