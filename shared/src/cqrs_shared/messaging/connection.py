"""Opening the broker connection (robust: it reconnects by itself and restores channels,
queues and consumers after the broker comes back)."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection

# seconds between reconnection attempts while the broker is unreachable
RECONNECT_INTERVAL = 1.0


async def connect(amqp_url: str, *, name: str | None = None) -> AbstractRobustConnection:
    return await aio_pika.connect_robust(amqp_url, reconnect_interval=RECONNECT_INTERVAL,
                                         client_properties={"connection_name": name} if name else None)


def is_connected(connection: AbstractConnection) -> bool:
    """Readiness: the connection is open now. A robust connection that lost the broker is
    not `is_closed` (that only means closed for good) while it reconnects; `connected` is
    cleared at the loss and set again once it is back."""
    return not connection.is_closed and connection.connected.is_set()
