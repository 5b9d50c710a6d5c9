"""PostgreSQL adapter (asyncpg): the write model, the event store/outbox and replies."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from command_service.application.ports import ReplyExists, Tx
from command_service.domain.model import Customer, Order, OrderLine, Product
from cqrs_shared import tracing

log = logging.getLogger(__name__)

RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Pooled connections carry no session state here (no LISTEN, advisory locks or SET: the
    relay has a connection of its own), so the default reset on release (RESET ALL, UNLISTEN
    *, CLOSE ALL, ...) would only cost a round trip per acquire."""


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init, reset=_no_reset)


async def _audit(conn: asyncpg.Connection | asyncpg.Pool, request: dict[str, Any] | None, reply: dict[str, Any]) -> None:
    request = request or {}
    meta = request.get("metadata") if isinstance(request.get("metadata"), dict) else {}
    roles = [r for r in meta.get("roles", []) if isinstance(r, str)] if isinstance(meta.get("roles"), list) else []

    def text(key: str) -> str | None:
        v = request.get(key)
        return v[:200] if isinstance(v, str) else None

    await conn.execute(
        "INSERT INTO command_audit (command_id, command_type, user_id, roles, aggregate_id, status, error_code, "
        "request, reply) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        reply.get("commandId"), text("commandType"), text("userId"), roles, reply.get("aggregateId"),
        reply["status"], (reply.get("error") or {}).get("code"), request or None, reply)


class PgTx(Tx):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def customer(self, customer_id: str, *, lock: bool = False) -> Customer | None:
        row = await self.conn.fetchrow(
            "SELECT id, name, email, credit_limit_cents, version FROM customers WHERE id = $1"
            + (" FOR UPDATE" if lock else ""), customer_id)
        return Customer(row["id"], row["name"], row["email"], row["credit_limit_cents"], row["version"]) if row else None

    async def customer_exists(self, customer_id: str) -> bool:
        return bool(await self.conn.fetchval("SELECT 1 FROM customers WHERE id = $1", customer_id))

    async def products(self, product_ids: list[str], *, lock: bool = False) -> dict[str, Product]:
        rows = await self.conn.fetch(
            "SELECT id, name, price_cents, stock, version FROM products WHERE id = ANY($1::text[]) ORDER BY id"
            + (" FOR UPDATE" if lock else ""), product_ids)
        return {r["id"]: Product(r["id"], r["name"], r["price_cents"], r["stock"], r["version"]) for r in rows}

    async def product_exists(self, product_id: str) -> bool:
        return bool(await self.conn.fetchval("SELECT 1 FROM products WHERE id = $1", product_id))

    async def order_exists(self, order_id: str) -> bool:
        return bool(await self.conn.fetchval("SELECT 1 FROM orders WHERE id = $1", order_id))

    async def order(self, order_id: str, *, lock: bool = False) -> Order | None:
        row = await self.conn.fetchrow(
            "SELECT id, customer_id, status, shipping_address, tracking_number, version FROM orders WHERE id = $1"
            + (" FOR UPDATE" if lock else ""), order_id)
        if row is None:
            return None
        lines = await self.conn.fetch(
            "SELECT product_id, name, quantity, unit_price_cents FROM order_items WHERE order_id = $1 ORDER BY product_id",
            order_id)
        return Order(row["id"], row["customer_id"],
                     [OrderLine(r["product_id"], r["name"], r["quantity"], r["unit_price_cents"]) for r in lines],
                     row["shipping_address"], row["status"], row["version"], row["tracking_number"])

    async def update_order(self, o: Order, at: datetime) -> None:
        await self.conn.execute(
            "UPDATE orders SET status = $2, tracking_number = $3, version = $4, updated_at = $5 WHERE id = $1",
            o.id, o.status, o.tracking_number, o.version, at)

    async def update_product(self, p: Product) -> None:
        await self.conn.execute("UPDATE products SET stock = $2, version = $3 WHERE id = $1", p.id, p.stock, p.version)

    async def open_amount_cents(self, customer_id: str) -> int:
        return await self.conn.fetchval(
            "SELECT coalesce(sum(total_cents), 0)::bigint FROM orders "
            "WHERE customer_id = $1 AND status IN ('placed', 'shipped')", customer_id)

    async def insert_customer(self, c: Customer, at: datetime) -> None:
        await self.conn.execute(
            "INSERT INTO customers (id, name, email, credit_limit_cents, version, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6)", c.id, c.name, c.email, c.credit_limit_cents, c.version, at)

    async def insert_product(self, p: Product, at: datetime) -> None:
        await self.conn.execute(
            "INSERT INTO products (id, name, price_cents, stock, version, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            p.id, p.name, p.price_cents, p.stock, p.version, at)

    async def update_stock(self, products: list[Product]) -> None:
        await self.conn.executemany("UPDATE products SET stock = $2 WHERE id = $1", [(p.id, p.stock) for p in products])

    async def insert_order(self, o: Order, at: datetime) -> None:
        await self.conn.execute(
            "INSERT INTO orders (id, customer_id, status, total_cents, shipping_address, tracking_number, "
            "version, placed_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            o.id, o.customer_id, o.status, o.total_cents, o.shipping_address, o.tracking_number, o.version, at)
        await self.conn.executemany(
            "INSERT INTO order_items (order_id, product_id, name, quantity, unit_price_cents) VALUES ($1, $2, $3, $4, $5)",
            [(o.id, ln.product_id, ln.name, ln.quantity, ln.unit_price_cents) for ln in o.lines])

    async def reserve_positions(self, count: int) -> tuple[int, datetime]:
        row = await self.conn.fetchrow(
            "UPDATE position_counter SET value = value + $1 WHERE id = 1 RETURNING value, clock_timestamp() AS at", count)
        return row["value"], row["at"]

    async def insert_events(self, envelopes: list[dict[str, Any]], at: datetime) -> None:
        trace_context = tracing.carrier()  # the command's trace, continued by the relay
        await self.conn.executemany(
            "INSERT INTO events (position, event_id, aggregate_type, aggregate_id, version, event_type, envelope, "
            "created_at, trace_context) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [(e["position"], e["eventId"], e["aggregateType"], e["aggregateId"], e["version"], e["eventType"], e, at,
              trace_context) for e in envelopes])  # the events_notify_outbox trigger wakes the relay at commit

    async def save_reply(self, command_id: str, command_type: str | None, reply: dict[str, Any]) -> None:
        try:
            await self.conn.execute(
                "INSERT INTO command_replies (command_id, command_type, reply) VALUES ($1, $2, $3)",
                command_id, command_type, reply)
        except asyncpg.exceptions.UniqueViolationError:
            raise ReplyExists(command_id) from None

    async def audit(self, request: dict[str, Any] | None, reply: dict[str, Any]) -> None:
        await _audit(self.conn, request, reply)


class PgCommandStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def stored_reply(self, command_id: str) -> dict[str, Any] | None:
        return await self.pool.fetchval("SELECT reply FROM command_replies WHERE command_id = $1", command_id)

    async def in_transaction(self, work: Callable[[Tx], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(RETRYABLE), stop=stop_after_attempt(10),
            wait=wait_random_exponential(multiplier=0.005, max=0.2), reraise=True,
        ):
            with attempt:
                async with self.pool.acquire() as conn, conn.transaction():
                    return await work(PgTx(conn))
        raise AssertionError("unreachable")

    async def save_reply(self, command_id: str, command_type: str | None, reply: dict[str, Any],
                         request: dict[str, Any] | None) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            stored = await conn.fetchval(
                "WITH ins AS (INSERT INTO command_replies (command_id, command_type, reply) VALUES ($1, $2, $3) "
                "ON CONFLICT (command_id) DO NOTHING RETURNING reply) "
                "SELECT reply FROM ins UNION ALL SELECT reply FROM command_replies WHERE command_id = $1 LIMIT 1",
                command_id, command_type, reply)
            if stored is None:  # a concurrent insert committed after this statement's snapshot
                stored = await conn.fetchval("SELECT reply FROM command_replies WHERE command_id = $1", command_id)
            await _audit(conn, request, stored)
        return stored


    async def audit(self, request: dict[str, Any] | None, reply: dict[str, Any]) -> None:
        await _audit(self.pool, request, reply)


def apply_migrations(dsn: str) -> list[str]:
    """Applies the versioned SQL migrations (yoyo) and returns the ids applied now."""
    from importlib.resources import files

    from yoyo import get_backend, read_migrations

    url = dsn.replace("postgresql://", "postgresql+psycopg://", 1).replace("postgres://", "postgresql+psycopg://", 1)
    backend = get_backend(url)
    migrations = read_migrations(str(files("command_service") / "migrations"))
    with backend.lock():
        todo = backend.to_apply(migrations)
        backend.apply_migrations(todo)
    return [m.id for m in todo]


async def ensure_database(dsn: str) -> None:
    """Creates the database named in the DSN if it does not exist (dev and tests)."""
    base, _, name = dsn.rpartition("/")
    name = name.split("?")[0]
    conn = await asyncpg.connect(base + "/postgres")
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
