"""Composition root: everything is built in `build()`, nothing at import time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cqrs_shared.health import HealthServer

from projector_service.adapters.amqp import connect_amqp, make_consumer, request_replay
from projector_service.adapters.mongo import MongoViewStore, connect_mongo, mongo_ready, ensure_indexes
from projector_service.adapters.progress import ObservedViewStore, ProjectionProgress
from projector_service.application.projector import Projector
from projector_service.config import ProjectorSettings


@dataclass
class ProjectorApp:
    connection: Any
    mongo: Any
    consumer: Any
    health: HealthServer | None = None

    async def stop(self) -> None:
        if self.health is not None:
            await self.health.stop()
        await self.consumer.stop()
        await self.connection.close()
        self.mongo.close()


async def build(settings: ProjectorSettings) -> ProjectorApp:
    mongo = connect_mongo(settings.mongo_url)
    db = mongo[settings.mongo_db]
    await ensure_indexes(db)
    connection = await connect_amqp(settings.amqp_url)
    progress = ProjectionProgress()
    store = ObservedViewStore(MongoViewStore(db), progress)
    await store.advance_watermark()  # the metrics start from the stored watermark
    consumer = make_consumer(connection, Projector(store), prefetch=settings.prefetch, progress=progress)
    await consumer.start()
    if settings.catch_up_on_start:
        await request_replay(connection, await store.advance_watermark() + 1)
    health = HealthServer(settings.health_port, {"amqp": lambda: not connection.is_closed,
                                                 "mongo": lambda: mongo_ready(mongo)})
    if settings.health_port >= 0:
        await health.start()
    return ProjectorApp(connection, mongo, consumer, health if settings.health_port >= 0 else None)
