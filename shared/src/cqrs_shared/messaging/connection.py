"""Opening the broker connection (robust: it reconnects by itself and restores channels,
queues and consumers after the broker comes back)."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractRobustConnection


async def connect(amqp_url: str, *, name: str | None = None) -> AbstractRobustConnection:
    return await aio_pika.connect_robust(amqp_url, client_properties={"connection_name": name} if name else None)
