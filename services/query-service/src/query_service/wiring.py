"""Composition root: everything is built in `build()`, nothing at import time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cqrs_shared.health import HealthServer
from cqrs_shared.messaging.connection import is_connected

from query_service.adapters.amqp import connect_amqp, make_consumer, subscribe_watermarks
from query_service.adapters.mongo import MongoViewReader, connect_mongo, mongo_ready
from query_service.application.service import QueryService
from query_service.application.watermark import Notifications, WatermarkWatcher
from query_service.config import QuerySettings


@dataclass
class QueryApp:
    connection: Any
    mongo: Any
    consumer: Any
    watcher: WatermarkWatcher
    health: HealthServer | None = None

    async def stop(self) -> None:
        if self.health is not None:
            await self.health.stop()
        await self.consumer.stop()
        await self.watcher.close()
        await self.connection.close()
        self.mongo.close()


async def build(settings: QuerySettings) -> QueryApp:
    mongo = connect_mongo(settings.mongo_url)
    notifications = Notifications()
    reader = MongoViewReader(mongo[settings.mongo_db], notifications=notifications)
    watcher = WatermarkWatcher(reader.watermark, interval=settings.watermark_poll_ms / 1000,
                               notified=notifications.arriving)
    connection = await connect_amqp(settings.amqp_url)
    await subscribe_watermarks(connection, settings.instance, notifications, watcher.poke)
    reply_channel = await connection.channel()
    consumer = make_consumer(connection, reply_channel, QueryService(reader, watcher),
                             prefetch=settings.prefetch)
    await consumer.start()
    health = HealthServer(settings.health_port, {"amqp": lambda: is_connected(connection),
                                                 "mongo": lambda: mongo_ready(mongo)})
    if settings.health_port >= 0:
        await health.start()
    return QueryApp(connection, mongo, consumer, watcher, health if settings.health_port >= 0 else None)
