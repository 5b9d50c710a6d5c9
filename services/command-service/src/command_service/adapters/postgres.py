"""PostgreSQL adapter (asyncpg): the write model, the event store/outbox and replies."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from command_service.application.ports import ReplyExists, Tx
from command_service.domain.model import Customer, Order, OrderLine, Product
from cqrs_shared import tracing

log = logging.getLogger(__name__)


class WriteConflict(Exception):
    """A concurrent transaction created the aggregate this command creates (its existence was
    read before that one committed): the command runs again and is rejected as a duplicate."""


# the keys of the aggregates a command creates after reading that they do not exist (the
# events' unique (aggregate_type, aggregate_id, version) may be the first one hit)
_CREATED_KEYS = {"orders_pkey", "customers_pkey", "products_pkey", "events_aggregate_type_aggregate_id_version_key"}
RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError, WriteConflict)


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Pooled connections carry no session state here (no LISTEN, advisory locks or SET: the
    relay has a connection of its own), so the default reset on release (RESET ALL, UNLISTEN
    *, CLOSE ALL, ...) would only cost a round trip per acquire."""


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init, reset=_no_reset)


AUDIT_COLUMNS = "command_id, command_type, user_id, roles, aggregate_id, status, error_code, request"


def _audit_values(request: dict[str, Any] | None, reply: dict[str, Any]) -> tuple:
    """The audit row's AUDIT_COLUMNS for a request and its reply (the reply column apart)."""
    request = request or {}
    meta = request.get("metadata") if isinstance(request.get("metadata"), dict) else {}
    roles = [r for r in meta.get("roles", []) if isinstance(r, str)] if isinstance(meta.get("roles"), list) else []

    def text(key: str) -> str | None:
        v = request.get(key)
        return v[:200] if isinstance(v, str) else None

    return (reply.get("commandId"), text("commandType"), text("userId"), roles, reply.get("aggregateId"),
            reply["status"], (reply.get("error") or {}).get("code"), request or None)


async def _audit(conn: asyncpg.Connection | asyncpg.Pool, request: dict[str, Any] | None, reply: dict[str, Any]) -> None:
    await conn.execute(f"INSERT INTO command_audit ({AUDIT_COLUMNS}, reply) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                       *_audit_values(request, reply), reply)


# the commit-order time as the contract writes it (ISO 8601 UTC, milliseconds, Z), as iso_ms does
_ISO_MS = """to_char(c.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


class _Append:
    """Builds the one statement that ends an accepted command: the position counter update
    (`c`: the new value and clock_timestamp() under its row lock), then, as data-modifying
    CTEs reading `c`, the buffered state changes, the events, the reply and the audit row.
    One round trip instead of one per write, and the counter's row lock (held until commit,
    which keeps positions in commit order) covers this statement and the COMMIT only."""

    def __init__(self) -> None:
        self.ctes: list[str] = []
        self.args: list[Any] = []
        self.tables: set[str] = set()

    def arg(self, value: Any, cast: str) -> str:
        self.args.append(value)
        return f"${len(self.args)}::{cast}"

    def write(self, table: str, sql: str) -> None:
        # two changes of one row in one statement are undefined in PostgreSQL: one per table
        if table in self.tables:
            raise AssertionError(f"a command may change {table} only once")
        self.tables.add(table)
        self.ctes.append(sql)

    def statement(self, count: str) -> str:
        head = f"c AS (UPDATE position_counter SET value = value + {count} WHERE id = 1 " \
               "RETURNING value, clock_timestamp() AS at)"
        ctes = ",\n".join([head] + [f"w{i} AS ({sql})" for i, sql in enumerate(self.ctes)])
        return f"WITH {ctes}\nSELECT value FROM c"


_PLACE_ORDER_READ = (
    # The Append scans `c` before `p` and `o`: the customers are locked first, then the
    # products, each in id order (one command's ids, or a whole group's).
    "WITH c AS (SELECT id, name, email, credit_limit_cents, open_cents, version FROM customers "
    "           WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE), "
    "p AS (SELECT id, name, price_cents, stock, version FROM products WHERE id = ANY($2::text[]) "
    "      ORDER BY id FOR UPDATE) "
    "SELECT 0 AS kind, id, name, email, credit_limit_cents AS cents, open_cents AS open, NULL::int AS stock, "
    "       version FROM c "
    "UNION ALL SELECT 1, id, name, NULL, price_cents, NULL, stock, version FROM p "
    "UNION ALL SELECT 2, id, NULL, NULL, NULL, NULL, NULL, NULL FROM orders WHERE id = ANY($3::text[])")


async def _place_order_rows(conn: asyncpg.Connection, customer_ids: list[str], product_ids: list[str],
                            order_ids: list[str]) -> tuple[dict[str, Customer], dict[str, Product], set[str]]:
    """The customers and products, locked, and which of the orders exist, in one round trip.
    FOR UPDATE returns the newest committed version of each locked row, so a customer's
    open_cents (kept by a trigger on orders) includes every committed order, whatever this
    statement's snapshot. The orders' existence is read with the statement's snapshot: an
    order of that id committed since fails the insert, and the command runs again
    (WriteConflict)."""
    customers: dict[str, Customer] = {}
    products: dict[str, Product] = {}
    orders: set[str] = set()
    for r in await conn.fetch(_PLACE_ORDER_READ, customer_ids, product_ids, order_ids):
        if r["kind"] == 0:
            customers[r["id"]] = Customer(r["id"], r["name"], r["email"], r["cents"], r["version"], r["open"])
        elif r["kind"] == 1:
            products[r["id"]] = Product(r["id"], r["name"], r["cents"], r["stock"], r["version"])
        else:
            orders.add(r["id"])
    return customers, products, orders


class _GroupRows:
    """What a group of PlaceOrders locked up front, in one statement (customers, then
    products, each in id order, so groups and single commands lock in one global order).
    The group's commands read these objects instead of the database and keep them up to
    date: the domain lowers the products' stock in place, insert_order adds the order to
    its customer's open amount (as the trigger does in the database) and to `orders`. No
    other transaction can change the locked rows before the group commits; only PlaceOrders
    run in such a group, so nothing else changes them."""

    def __init__(self, asked_customers: set[str], asked_products: set[str], customers: dict[str, Customer],
                 products: dict[str, Product], orders: set[str]) -> None:
        self.asked_customers, self.asked_products = asked_customers, asked_products
        self.customers, self.products, self.orders = customers, products, orders

    @classmethod
    async def read(cls, conn: asyncpg.Connection, prefetch: list[tuple[str, list[str], str | None]]) -> _GroupRows:
        cids = sorted({c for c, _, _ in prefetch})
        pids = sorted({p for _, ps, _ in prefetch for p in ps})
        customers, products, orders = await _place_order_rows(conn, cids, pids, [o for _, _, o in prefetch if o])
        return cls(set(cids), set(pids), customers, products, orders)


class PgTx(Tx):
    def __init__(self, conn: asyncpg.Connection, group: _GroupRows | None = None) -> None:
        self.conn = conn
        self._writes = _Append()
        self._group = group

    # -- reads (at once) -------------------------------------------------------------------

    async def customer(self, customer_id: str, *, lock: bool = False) -> Customer | None:
        row = await self.conn.fetchrow(
            "SELECT id, name, email, credit_limit_cents, version, open_cents FROM customers WHERE id = $1"
            + (" FOR UPDATE" if lock else ""), customer_id)
        return Customer(row["id"], row["name"], row["email"], row["credit_limit_cents"], row["version"],
                        row["open_cents"]) if row else None

    async def customer_exists(self, customer_id: str) -> bool:
        return bool(await self.conn.fetchval("SELECT 1 FROM customers WHERE id = $1", customer_id))

    async def products(self, product_ids: list[str], *, lock: bool = False) -> dict[str, Product]:
        rows = await self.conn.fetch(
            "SELECT id, name, price_cents, stock, version FROM products WHERE id = ANY($1::text[]) ORDER BY id"
            + (" FOR UPDATE" if lock else ""), product_ids)
        return {r["id"]: Product(r["id"], r["name"], r["price_cents"], r["stock"], r["version"]) for r in rows}

    async def product_exists(self, product_id: str) -> bool:
        return bool(await self.conn.fetchval("SELECT 1 FROM products WHERE id = $1", product_id))

    async def customer_and_products(self, customer_id: str, product_ids: list[str],
                                    order_id: str | None = None) -> tuple[Customer | None, dict[str, Product], bool]:
        g = self._group
        if g is not None and customer_id in g.asked_customers and g.asked_products.issuperset(product_ids):
            return (g.customers.get(customer_id), {p: g.products[p] for p in product_ids if p in g.products},
                    order_id in g.orders)
        customers, products, orders = await _place_order_rows(self.conn, [customer_id], product_ids,
                                                               [order_id] if order_id else [])
        return customers.get(customer_id), products, bool(orders)

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

    # -- state changes (buffered until append) -----------------------------------------------

    def update_order(self, o: Order) -> None:
        w = self._writes
        w.write("orders", f"UPDATE orders SET status = {w.arg(o.status, 'text')}, "
                          f"tracking_number = {w.arg(o.tracking_number, 'text')}, version = {w.arg(o.version, 'int')}, "
                          f"updated_at = c.at FROM c WHERE id = {w.arg(o.id, 'text')}")

    def update_product(self, p: Product) -> None:
        w = self._writes
        w.write("products", f"UPDATE products SET stock = {w.arg(p.stock, 'int')}, version = {w.arg(p.version, 'int')} "
                            f"WHERE id = {w.arg(p.id, 'text')}")

    def insert_customer(self, c: Customer) -> None:
        w = self._writes
        w.write("customers", "INSERT INTO customers (id, name, email, credit_limit_cents, version, created_at) "
                             f"SELECT {w.arg(c.id, 'text')}, {w.arg(c.name, 'text')}, {w.arg(c.email, 'text')}, "
                             f"{w.arg(c.credit_limit_cents, 'bigint')}, {w.arg(c.version, 'int')}, c.at FROM c")

    def insert_product(self, p: Product) -> None:
        w = self._writes
        w.write("products", "INSERT INTO products (id, name, price_cents, stock, version, created_at) "
                            f"SELECT {w.arg(p.id, 'text')}, {w.arg(p.name, 'text')}, {w.arg(p.price_cents, 'bigint')}, "
                            f"{w.arg(p.stock, 'int')}, {w.arg(p.version, 'int')}, c.at FROM c")

    def update_stock(self, products: list[Product]) -> None:
        w = self._writes
        w.write("products", f"UPDATE products p SET stock = u.stock FROM unnest({w.arg([p.id for p in products], 'text[]')}, "
                            f"{w.arg([p.stock for p in products], 'int[]')}) AS u(id, stock) WHERE p.id = u.id")

    def insert_order(self, o: Order) -> None:
        if self._group is not None:
            self._group.orders.add(o.id)
            if (customer := self._group.customers.get(o.customer_id)) is not None:
                customer.open_cents += o.total_cents  # as the trigger on orders does
        w = self._writes
        w.write("orders", "INSERT INTO orders (id, customer_id, status, total_cents, shipping_address, "
                          "tracking_number, version, placed_at, updated_at) "
                          f"SELECT {w.arg(o.id, 'text')}, {w.arg(o.customer_id, 'text')}, {w.arg(o.status, 'text')}, "
                          f"{w.arg(o.total_cents, 'bigint')}, {w.arg(o.shipping_address, 'jsonb')}, "
                          f"{w.arg(o.tracking_number, 'text')}, {w.arg(o.version, 'int')}, c.at, c.at FROM c")
        order_id = w.arg(o.id, "text")
        w.write("order_items", "INSERT INTO order_items (order_id, product_id, name, quantity, unit_price_cents) "
                               f"SELECT {order_id}, u.p, u.n, u.q, u.c FROM unnest("
                               f"{w.arg([ln.product_id for ln in o.lines], 'text[]')}, "
                               f"{w.arg([ln.name for ln in o.lines], 'text[]')}, "
                               f"{w.arg([ln.quantity for ln in o.lines], 'int[]')}, "
                               f"{w.arg([ln.unit_price_cents for ln in o.lines], 'bigint[]')}) AS u(p, n, q, c)")

    # -- the last step ---------------------------------------------------------------------

    async def append(self, envelopes: list[dict[str, Any]], command_id: str, command_type: str,
                     reply: dict[str, Any], request: dict[str, Any] | None) -> int:
        w = self._writes
        count = w.arg(len(envelopes), "int")
        first = f"c.value - {count} + e.ord"
        trace_context = w.arg(tracing.carrier(), "jsonb")  # the command's trace, continued by the relay
        w.write("events", "INSERT INTO events (position, event_id, aggregate_type, aggregate_id, version, event_type, "
                          "envelope, created_at, trace_context) "
                          f"SELECT {first}, (e.doc->>'eventId')::uuid, e.doc->>'aggregateType', e.doc->>'aggregateId', "
                          f"(e.doc->>'version')::int, e.doc->>'eventType', "
                          f"e.doc || jsonb_build_object('position', {first}, 'timestamp', {_ISO_MS}), c.at, {trace_context} "
                          f"FROM c, jsonb_array_elements({w.arg(envelopes, 'jsonb')}) WITH ORDINALITY AS e(doc, ord)")
        # the events_notify_outbox trigger wakes the relay at commit
        stored = f"{w.arg(reply, 'jsonb')} || jsonb_build_object('position', c.value)"
        w.write("command_replies", "INSERT INTO command_replies (command_id, command_type, reply) "
                                   f"SELECT {w.arg(command_id, 'text')}, {w.arg(command_type, 'text')}, {stored} FROM c")
        casts = ("text", "text", "text", "text[]", "text", "text", "text", "jsonb")
        values = ", ".join(w.arg(v, cast) for v, cast in zip(_audit_values(request, reply), casts))
        w.write("command_audit", f"INSERT INTO command_audit ({AUDIT_COLUMNS}, reply) SELECT {values}, {stored} FROM c")
        try:
            return await self.conn.fetchval(w.statement(count), *w.args)
        except asyncpg.exceptions.UniqueViolationError as exc:
            if exc.constraint_name == "command_replies_pkey":
                raise ReplyExists(command_id) from None
            if exc.constraint_name in _CREATED_KEYS:
                raise WriteConflict(exc.constraint_name) from exc
            raise


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

    async def in_one_transaction(self, works: list[Callable[[Tx], Awaitable[Any]]],
                                 prefetch: list[tuple[str, list[str], str | None]] | None = None) -> list[Any]:
        """Runs the works one after the other in one transaction (group commit): each sees the
        effects of those before it. No retry here: on any exception the transaction rolls
        back and the exception propagates (the caller runs the works one by one instead).
        `prefetch` (only when every work is a PlaceOrder): the (customer id, product ids,
        order id) of each; their rows are locked and read in one statement first (_GroupRows)."""
        async with self.pool.acquire() as conn, conn.transaction():
            group = await _GroupRows.read(conn, prefetch) if prefetch else None
            return [await work(PgTx(conn, group)) for work in works]

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
