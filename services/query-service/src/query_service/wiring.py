"""Composition root: everything is built in `build()`, nothing at import time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from query_service.adapters.amqp import connect_amqp, make_consumer
from query_service.adapters.mongo import MongoViewReader, connect_mongo
from query_service.application.service import QueryService
from query_service.application.watermark import WatermarkWatcher
from query_service.config import QuerySettings


@dataclass
class QueryApp:
    connection: Any
    mongo: Any
    consumer: Any
    watcher: WatermarkWatcher

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.watcher.close()
        await self.connection.close()
        self.mongo.close()


async def build(settings: QuerySettings) -> QueryApp:
    mongo = connect_mongo(settings.mongo_url)
    reader = MongoViewReader(mongo[settings.mongo_db])
    watcher = WatermarkWatcher(reader.watermark, interval=settings.watermark_poll_ms / 1000)
    connection = await connect_amqp(settings.amqp_url)
    reply_channel = await connection.channel()
    consumer = make_consumer(connection, reply_channel, QueryService(reader, watcher),
                             prefetch=settings.prefetch)
    await consumer.start()
    return QueryApp(connection, mongo, consumer, watcher)
