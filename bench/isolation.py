"""A RabbitMQ vhost, a migrated PostgreSQL database and MongoDB database names of a bench's own,
created on entry and removed on exit, so a bench never touches the default vhost "/" nor
another run's data. The servers come from AMQP_URL, POSTGRES_DSN and MONGO_URL.

    async with isolated("scale") as iso:
        env = {"AMQP_URL": iso.amqp_url, "POSTGRES_DSN": iso.dsn, "MONGO_URL": iso.mongo_url,
               "MONGO_DB": iso.mongo_db}
"""

from __future__ import annotations

import os
import subprocess
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
from motor.motor_asyncio import AsyncIOMotorClient

from command_service.adapters.postgres import apply_migrations, ensure_database


def _with_path(url: str, path: str) -> str:
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, path, "", ""))


@dataclass
class Isolated:
    run: str
    vhost: str
    amqp_url: str
    dsn: str
    mongo_url: str
    mongo_db: str
    # every MongoDB database the bench made (mongo_db, plus any it adds), dropped on exit
    mongo_dbs: list[str] = field(default_factory=list)

    def mongo_database(self, suffix: str) -> str:
        """Another MongoDB database of this run (dropped on exit like the first)."""
        name = f"{self.mongo_db}_{suffix}"
        self.mongo_dbs.append(name)
        return name


@asynccontextmanager
async def isolated(prefix: str, *, migrate: bool = True) -> AsyncIterator[Isolated]:
    amqp = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    pg = os.environ.get("POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    mongo_url = os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017")
    run = uuid.uuid4().hex[:8]
    vhost, name = f"{prefix}-{run}", f"{prefix.replace('-', '_')}_{run}"
    iso = Isolated(run, vhost, _with_path(amqp, "/" + vhost), _with_path(pg, "/" + name), mongo_url, name, [name])
    user = urllib.parse.urlsplit(amqp).username or "guest"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    try:
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
                       check=True, capture_output=True)
        await ensure_database(iso.dsn)
        if migrate:
            apply_migrations(iso.dsn)
        yield iso
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
        conn = await asyncpg.connect(_with_path(pg, "/postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        mongo = AsyncIOMotorClient(mongo_url)
        for db in iso.mongo_dbs:
            await mongo.drop_database(db)
        mongo.close()
