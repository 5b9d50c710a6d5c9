"""Composition root: everything is built in `build()` / `rebuild()`, nothing at import time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cqrs_shared.health import HealthServer
from cqrs_shared.messaging.connection import is_connected

from projector_service.adapters.amqp import AmqpHistoryFeed, connect_amqp, make_consumer, request_replay
from projector_service.adapters.mongo import (
    MongoSetRegistry, MongoViewSets, connect_mongo, ensure_indexes, mongo_ready, read_pointer,
)
from projector_service.adapters.progress import ObservedViewStore, ProjectionProgress
from projector_service.adapters.rebuild_requests import RebuildRequests
from projector_service.adapters.watermark import WatermarkAnnouncer
from projector_service.application.projector import Projector
from projector_service.application.rebuild import Progress, RebuildResult, Rebuilder
from projector_service.config import ProjectorSettings


@dataclass
class ProjectorApp:
    connection: Any
    mongo: Any
    consumer: Any
    health: HealthServer | None = None
    rebuilds: RebuildRequests | None = None
    announcer: WatermarkAnnouncer | None = None

    async def stop(self) -> None:
        if self.health is not None:
            await self.health.stop()
        if self.rebuilds is not None:  # a rebuild still running abandons its set
            await self.rebuilds.stop()
        await self.consumer.stop()
        if self.announcer is not None:
            await self.announcer.stop()
        await self.connection.close()
        self.mongo.close()


async def build(settings: ProjectorSettings, *, rebuild_options: dict[str, Any] | None = None) -> ProjectorApp:
    mongo = connect_mongo(settings.mongo_url)
    db = mongo[settings.mongo_db]
    live = (await read_pointer(db)).live
    await ensure_indexes(db, live)
    connection = await connect_amqp(settings.amqp_url)
    progress = ProjectionProgress()
    announcer = WatermarkAnnouncer(connection)
    await announcer.start()
    sets: MongoViewSets = MongoViewSets(
        db, wrap=lambda store: ObservedViewStore(store, progress, when=lambda: store.name == sets.live_name,
                                                 announce=announcer.announce))
    await sets.targets()  # reads the pointer: which set is live
    await sets.store(live).advance_watermark()  # the metrics start from the stored watermark
    projector = Projector(sets, out_of_order_wait_s=settings.out_of_order_wait_ms / 1000)
    consumer = make_consumer(connection, projector, prefetch=settings.prefetch, progress=progress)
    await consumer.start()
    # `cqrsctl rebuild`: a request reaches one replica, which runs the rebuild below in-process
    rebuilds = RebuildRequests(
        connection, lambda on_progress, grace_s: run_rebuild(settings, db, connection, on_progress, grace_s=grace_s,
                                                    **(rebuild_options or {})),
        instance=settings.instance)
    await rebuilds.start()
    if settings.catch_up_on_start:
        await request_replay(connection, await sets.store(live).advance_watermark() + 1)
    health = HealthServer(settings.health_port, {"amqp": lambda: is_connected(connection),
                                                 "mongo": lambda: mongo_ready(mongo)})
    if settings.health_port >= 0:
        await health.start()
    return ProjectorApp(connection, mongo, consumer, health if settings.health_port >= 0 else None, rebuilds, announcer)


async def rebuild(settings: ProjectorSettings, on_progress: Callable[[Progress], None] | None = None,
                  **options: Any) -> RebuildResult:
    """`projector-service rebuild`: one rebuild of all views with connections of its own."""
    mongo = connect_mongo(settings.mongo_url)
    connection = await connect_amqp(settings.amqp_url)
    try:
        return await run_rebuild(settings, mongo[settings.mongo_db], connection, on_progress, **options)
    finally:
        await connection.close()
        mongo.close()


async def run_rebuild(settings: ProjectorSettings, db: Any, connection: Any,
                      on_progress: Callable[[Progress], None] | None = None, *, grace_s: float | None = None,
                      **options: Any) -> RebuildResult:
    """The one rebuild path (application/rebuild.py), for the command and for requests taken
    by a running projector (`cqrsctl rebuild`): history over RabbitMQ, views in `db`."""
    feed = AmqpHistoryFeed(connection, prefetch=settings.rebuild_prefetch, per_message=settings.rebuild_per_message)
    try:
        await feed.start()
        rebuilder = Rebuilder(MongoSetRegistry(db), feed, owner=settings.instance,
                              batch_size=settings.rebuild_batch, buffer_orders=settings.rebuild_buffer_orders,
                              grace_s=settings.rebuild_grace_seconds if grace_s is None else grace_s,
                              on_progress=on_progress, **options)
        return await rebuilder.run()
    finally:
        await feed.stop()
