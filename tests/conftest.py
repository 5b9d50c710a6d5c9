"""Shared fixtures: real RabbitMQ, PostgreSQL and MongoDB(-compatible) servers.

URLs come from AMQP_URL, POSTGRES_DSN and MONGO_URL. When one is not set and Docker is
available, the server is started with testcontainers (rabbitmq:3-management, postgres:16,
mongo:7); otherwise the local defaults are used (scripts/test.sh starts the nx-27017 MongoDB
stand-in when MONGO_URL is unset). Every test module gets its own RabbitMQ vhost, its own
PostgreSQL database and its own MongoDB database, so modules run in any order.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import pytest

# every service started by a test (in-process or as a process) serves health on a free port
os.environ["HEALTH_PORT"] = "0"

DEFAULTS = {
    "AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
    "POSTGRES_DSN": "postgresql://postgres@127.0.0.1:5432/postgres",
    "MONGO_URL": "mongodb://127.0.0.1:27017",
}


def _docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


class Infra:
    def __init__(self) -> None:
        self.amqp_url = os.environ.get("AMQP_URL")
        self.postgres_dsn = os.environ.get("POSTGRES_DSN")
        self.mongo_url = os.environ.get("MONGO_URL")
        self._containers: list = []
        self._rabbit_exec: Callable[[list[str]], None] = lambda args: subprocess.run(
            ["rabbitmqctl", *args], check=True, capture_output=True)
        if not all((self.amqp_url, self.postgres_dsn, self.mongo_url)) and _docker_available():
            self._start_containers()
        self.amqp_url = self.amqp_url or DEFAULTS["AMQP_URL"]
        self.postgres_dsn = self.postgres_dsn or DEFAULTS["POSTGRES_DSN"]
        self.mongo_url = self.mongo_url or DEFAULTS["MONGO_URL"]

    def _start_containers(self) -> None:  # pragma: no cover - needs Docker
        if not self.amqp_url:
            from testcontainers.rabbitmq import RabbitMqContainer
            rabbit = RabbitMqContainer("rabbitmq:3-management").start()
            self._containers.append(rabbit)
            self.amqp_url = (f"amqp://guest:guest@{rabbit.get_container_host_ip()}:"
                             f"{rabbit.get_exposed_port(5672)}/")
            self._rabbit_exec = lambda args: rabbit.exec(["rabbitmqctl", *args])
        if not self.postgres_dsn:
            from testcontainers.postgres import PostgresContainer
            pg = PostgresContainer("postgres:16", driver=None).start()
            self._containers.append(pg)
            self.postgres_dsn = pg.get_connection_url()
        if not self.mongo_url:
            from testcontainers.mongodb import MongoDbContainer
            mongo = MongoDbContainer("mongo:7").start()
            self._containers.append(mongo)
            self.mongo_url = mongo.get_connection_url()

    def rabbitmqctl(self, *args: str) -> None:
        self._rabbit_exec(list(args))

    def stop(self) -> None:
        for c in self._containers:
            c.stop()


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    i = Infra()
    yield i
    i.stop()


# ---- RabbitMQ -----------------------------------------------------------------------------

def amqp_url_for_vhost(base: str, vhost: str) -> str:
    u = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + urllib.parse.quote(vhost, safe=""), u.query, ""))


@pytest.fixture(scope="module")
def rabbit_vhost_url(infra: Infra) -> Iterator[str]:
    """An AMQP URL on a fresh vhost of its own, deleted afterwards."""
    vhost = f"test-{uuid.uuid4().hex[:10]}"
    user = urllib.parse.urlsplit(infra.amqp_url).username or "guest"
    infra.rabbitmqctl("add_vhost", vhost)
    infra.rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    yield amqp_url_for_vhost(infra.amqp_url, vhost)
    infra.rabbitmqctl("delete_vhost", vhost)


# ---- MongoDB ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def mongo_url(infra: Infra) -> str:
    return infra.mongo_url


@pytest.fixture(scope="module")
def mongo_db_name() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


# ---- PostgreSQL ---------------------------------------------------------------------------

def dsn_for_db(base: str, name: str) -> str:
    u = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + name, u.query, ""))


@pytest.fixture(scope="module")
def pg_dsn(infra: Infra) -> Iterator[str]:
    """A fresh, migrated database of its own, dropped afterwards."""
    import asyncpg

    from command_service.adapters.postgres import apply_migrations, ensure_database

    name = f"test_{uuid.uuid4().hex[:12]}"
    dsn = dsn_for_db(infra.postgres_dsn, name)
    asyncio.run(ensure_database(dsn))
    apply_migrations(dsn)
    yield dsn

    async def drop() -> None:
        conn = await asyncpg.connect(dsn_for_db(infra.postgres_dsn, "postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())
