"""Fixtures of the integration tests."""

from __future__ import annotations

import asyncio

import pytest

from command_service.config import CommandSettings
from command_service.wiring import App


@pytest.fixture(scope="module")
async def command_app(rabbit_vhost_url, pg_dsn):
    """The command service running in-process on the module's vhost and database."""
    app = App(CommandSettings(amqp_url=rabbit_vhost_url, postgres_dsn=pg_dsn, relay_poll_seconds=0.2))
    task = asyncio.create_task(app.run())
    yield app
    app.stop()
    await asyncio.wait_for(task, 15)
