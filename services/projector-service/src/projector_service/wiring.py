"""Composition root: everything is built in `build()` / `rebuild()`, nothing at import time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cqrs_shared.health import HealthServer

from projector_service.adapters.amqp import AmqpHistoryFeed, connect_amqp, make_consumer, request_replay
from projector_service.adapters.mongo import (
    MongoSetRegistry, MongoViewSets, connect_mongo, ensure_indexes, mongo_ready, read_pointer,
)
from projector_service.adapters.progress import ObservedViewStore, ProjectionProgress
from projector_service.application.projector import Projector
from projector_service.application.rebuild import Progress, RebuildResult, Rebuilder
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
    live = (await read_pointer(db)).live
    await ensure_indexes(db, live)
    connection = await connect_amqp(settings.amqp_url)
    progress = ProjectionProgress()
    sets: MongoViewSets = MongoViewSets(
        db, wrap=lambda store: ObservedViewStore(store, progress, when=lambda: store.name == sets.live_name))
    await sets.targets()  # reads the pointer: which set is live
    await sets.store(live).advance_watermark()  # the metrics start from the stored watermark
    consumer = make_consumer(connection, Projector(sets), prefetch=settings.prefetch, progress=progress)
    await consumer.start()
    if settings.catch_up_on_start:
        await request_replay(connection, await sets.store(live).advance_watermark() + 1)
    health = HealthServer(settings.health_port, {"amqp": lambda: not connection.is_closed,
                                                 "mongo": lambda: mongo_ready(mongo)})
    if settings.health_port >= 0:
        await health.start()
    return ProjectorApp(connection, mongo, consumer, health if settings.health_port >= 0 else None)


async def rebuild(settings: ProjectorSettings, on_progress: Callable[[Progress], None] | None = None,
                  **options: Any) -> RebuildResult:
    """Runs one rebuild of all views (see application/rebuild.py) and returns its outcome."""
    mongo = connect_mongo(settings.mongo_url)
    connection = await connect_amqp(settings.amqp_url)
    feed = AmqpHistoryFeed(connection, prefetch=settings.rebuild_prefetch, per_message=settings.rebuild_per_message)
    try:
        await feed.start()
        rebuilder = Rebuilder(MongoSetRegistry(mongo[settings.mongo_db]), feed, owner=settings.instance,
                              batch_size=settings.rebuild_batch, grace_s=settings.rebuild_grace_seconds,
                              on_progress=on_progress, **options)
        return await rebuilder.run()
    finally:
        await feed.stop()
        await connection.close()
        mongo.close()
