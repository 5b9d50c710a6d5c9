"""Composition root: builds the command service from its settings. Nothing runs at import."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from command_service.adapters.amqp import command_consumer
from command_service.adapters.postgres import PgCommandStore, create_pool
from command_service.adapters.relay import OutboxRelay, refresh_outbox_metrics
from command_service.adapters.replay import replay_consumer
from command_service.application.service import CommandService
from command_service.config import CommandSettings
from cqrs_shared import metrics
from cqrs_shared.health import HealthServer
from cqrs_shared.messaging.connection import connect, is_connected

log = logging.getLogger("command_service")


@dataclass
class App:
    settings: CommandSettings

    def __post_init__(self) -> None:
        self._stop: asyncio.Event | None = None
        self.health: HealthServer | None = None

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def serve_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(self.run())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        await task

    async def run(self) -> None:
        s = self.settings
        pool = await create_pool(s.postgres_dsn, s.pg_pool_min, s.pg_pool_max)
        connection = await connect(s.amqp_url, name=f"command-service {s.instance}")
        service = CommandService(store=PgCommandStore(pool), group_max=s.command_group_max)
        consumer = command_consumer(connection, service, prefetch=s.prefetch)
        relay = OutboxRelay(dsn=s.postgres_dsn, amqp=connection, batch=s.relay_batch,
                            poll_seconds=s.relay_poll_seconds, crash_after_publish=s.relay_crash_after_publish)
        stop = self._stop = asyncio.Event()
        replayer = replay_consumer(connection, pool)

        async def db_ready() -> bool:
            return await pool.fetchval("SELECT 1") == 1

        health = HealthServer(s.health_port, {"amqp": lambda: is_connected(connection), "postgres": db_ready,
                                              "relay": lambda: relay.healthy})
        self.health = health
        remove_refresher = metrics.on_scrape(lambda: refresh_outbox_metrics(pool))
        if s.health_port >= 0:
            await health.start()
        await consumer.start()
        await replayer.start()
        if s.relay_enabled:
            relay.start()
        log.info("command-service ready (instance %s)", s.instance)
        await stop.wait()
        log.info("command-service stopping")
        if s.health_port >= 0:
            await health.stop()
        remove_refresher()
        await consumer.stop()
        if service.group is not None:
            await service.group.idle()
        await replayer.stop()
        await relay.stop()
        await connection.close()
        await pool.close()
