"""The command side's PostgreSQL store (no broker): the customer's open amount kept by the
trigger on orders (and its backfill by the migration), the credit check against it under
concurrency, and a creating command that loses a race is rejected as a duplicate."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import uuid

import asyncpg
import pytest

from command_service.adapters.postgres import PgCommandStore, create_pool
from command_service.application.service import CommandService

ADMIN = {"userId": "admin-1", "metadata": {"roles": ["admin"]}}
ADDRESS = {"street": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}
OPEN_BY_SUM = ("SELECT coalesce(sum(total_cents), 0) FROM orders WHERE customer_id = $1 "
               "AND status IN ('placed', 'shipped')")


@pytest.fixture
async def pool(pg_dsn):
    pool = await create_pool(pg_dsn, 2, 10)
    yield pool
    await pool.close()


async def _send(svc: CommandService, ctype: str, data: dict, command_id: str | None = None, **env) -> dict:
    body = json.dumps({"commandId": command_id or str(uuid.uuid4()), "commandType": ctype, **ADMIN, **env,
                       "data": data}).encode()
    return await svc.handle(body, ctype, "application/json")


async def _setup(svc: CommandService, run: str, credit: str = "100000") -> None:
    assert (await _send(svc, "RegisterCustomer", {"customerId": f"c-{run}", "name": "Cy", "email": "cy@example.com",
                                                  "creditLimit": credit}))["status"] == "accepted"
    assert (await _send(svc, "AddProduct", {"productId": f"p-{run}", "name": "P", "price": "10",
                                            "stock": 1000}))["status"] == "accepted"


def _order(run: str, qty: int = 1, order_id: str | None = None) -> dict:
    data = {"customerId": f"c-{run}", "items": [{"productId": f"p-{run}", "quantity": qty}], "shippingAddress": ADDRESS}
    return {**data, "orderId": order_id} if order_id else data


async def test_open_amount_follows_every_order_transition(pool):
    svc = CommandService(store=PgCommandStore(pool))
    run = uuid.uuid4().hex[:8]
    await _setup(svc, run)
    cid = f"c-{run}"

    async def check(expected_cents: int) -> None:
        assert await pool.fetchval("SELECT open_cents FROM customers WHERE id = $1", cid) == expected_cents
        assert await pool.fetchval(OPEN_BY_SUM, cid) == expected_cents

    o1 = (await _send(svc, "PlaceOrder", _order(run, 2)))["aggregateId"]
    o2 = (await _send(svc, "PlaceOrder", _order(run, 3)))["aggregateId"]
    await check(5000)
    assert (await _send(svc, "ShipOrder", {"orderId": o1, "trackingNumber": "T"}))["status"] == "accepted"
    await check(5000)  # shipped is still open
    assert (await _send(svc, "CancelOrder", {"orderId": o2, "reason": "x"}))["status"] == "accepted"
    await check(2000)
    assert (await _send(svc, "DeliverOrder", {"orderId": o1}))["status"] == "accepted"
    await check(0)
    assert (await _send(svc, "RefundOrder", {"orderId": o1, "reason": "x"}))["status"] == "accepted"
    await check(0)


async def test_credit_check_counts_orders_committed_by_concurrent_transactions(pool):
    svc = CommandService(store=PgCommandStore(pool), group_max=1)  # each command in its own transaction
    run = uuid.uuid4().hex[:8]
    await _setup(svc, run, credit="30")  # three orders of 10
    replies = await asyncio.gather(*(_send(svc, "PlaceOrder", _order(run)) for _ in range(10)))
    assert sum(r["status"] == "accepted" for r in replies) == 3
    assert {r["error"]["code"] for r in replies if r["status"] == "rejected"} == {"credit_limit_exceeded"}
    assert await pool.fetchval("SELECT open_cents FROM customers WHERE id = $1", f"c-{run}") == 3000


async def test_an_order_id_placed_concurrently_twice_is_accepted_once_and_then_a_duplicate(pool):
    svc = CommandService(store=PgCommandStore(pool), group_max=1)
    run = uuid.uuid4().hex[:8]
    await _setup(svc, run)
    # the second reads (before the first commits) that the order does not exist, then fails
    # to insert it, runs again and is rejected as a duplicate
    replies = await asyncio.gather(*(_send(svc, "PlaceOrder", _order(run, order_id=f"o-{run}")) for _ in range(3)))
    assert sorted(r["status"] for r in replies) == ["accepted", "rejected", "rejected"]
    assert {r["error"]["code"] for r in replies if r["status"] == "rejected"} == {"duplicate"}
    assert await pool.fetchval("SELECT stock FROM products WHERE id = $1", f"p-{run}") == 999


async def test_migration_backfills_the_open_amount_of_existing_orders(infra):
    from importlib.resources import files

    from yoyo import get_backend, read_migrations

    from command_service.adapters.postgres import apply_migrations, ensure_database

    def dsn_for_db(base: str, name: str) -> str:
        u = urllib.parse.urlsplit(base)
        return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + name, u.query, ""))

    name = f"test_{uuid.uuid4().hex[:12]}"
    dsn = dsn_for_db(infra.postgres_dsn, name)
    await ensure_database(dsn)
    try:
        backend = get_backend(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
        migrations = read_migrations(str(files("command_service") / "migrations"))
        with backend.lock():
            backend.apply_migrations(backend.to_apply(migrations.filter(lambda m: m.id < "0005")))
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("INSERT INTO customers VALUES ('a', 'A', 'a@x', 100, 1, now()), ('b', 'B', 'b@x', 100, 1, now())")
            for oid, cust, status, total in [("o1", "a", "placed", 100), ("o2", "a", "shipped", 20),
                                             ("o3", "a", "delivered", 7), ("o4", "a", "cancelled", 9),
                                             ("o5", "b", "refunded", 5)]:
                await conn.execute("INSERT INTO orders VALUES ($1, $2, $3, $4, '{}', NULL, 1, now(), now())",
                                   oid, cust, status, total)
            assert "0005_customer_open_amount" in apply_migrations(dsn)
            assert dict(await conn.fetch("SELECT id, open_cents FROM customers")) == {"a": 120, "b": 0}
            await conn.execute("UPDATE orders SET status = 'delivered' WHERE id = 'o2'")
            await conn.execute("DELETE FROM orders WHERE id = 'o1'")
            assert dict(await conn.fetch("SELECT id, open_cents FROM customers")) == {"a": 0, "b": 0}
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(dsn_for_db(infra.postgres_dsn, "postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
