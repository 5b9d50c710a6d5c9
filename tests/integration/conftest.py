"""Fixtures of the integration tests."""

from __future__ import annotations

import asyncio

import pytest

from command_service.config import CommandSettings
from command_service.wiring import App
from cqrs_shared.topology import COMMAND_QUEUE


async def _consuming(amqp_url: str, queue: str, task: asyncio.Task, timeout: float = 60.0) -> None:
    """Waits until `queue` has a consumer: a request published before would find no queue
    bound yet (declaring the topology's quorum queues takes a moment) and be dropped."""
    import aio_pika
    import aio_pika.exceptions

    conn = await aio_pika.connect(amqp_url)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            assert not task.done(), task.exception()
            ch = await conn.channel()
            try:
                if (await ch.declare_queue(queue, passive=True)).declaration_result.consumer_count:
                    return
            except aio_pika.exceptions.ChannelNotFoundEntity:
                pass
            finally:
                if not ch.is_closed:
                    await ch.close()
            await asyncio.sleep(0.05)
        raise TimeoutError(f"nothing consumes {queue} after {timeout}s")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def command_app(rabbit_vhost_url, pg_dsn):
    """The command service running in-process on the module's vhost and database."""
    app = App(CommandSettings(amqp_url=rabbit_vhost_url, postgres_dsn=pg_dsn, relay_poll_seconds=0.2))
    task = asyncio.create_task(app.run())
    await _consuming(rabbit_vhost_url, COMMAND_QUEUE.name, task)
    yield app
    app.stop()
    await asyncio.wait_for(task, 15)

