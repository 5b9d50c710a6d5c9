"""Group commit in the command service (CommandService + PgCommandStore on a database of its
own, no broker): commands that arrive together share one transaction, each sees the effects
of the ones before it, a rejection affects no other command, and an unexpected error runs
the group's commands again one by one."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from command_service.adapters.postgres import PgCommandStore, create_pool
from command_service.application.service import CommandService

ADMIN = {"userId": "admin-1", "metadata": {"roles": ["admin"]}}
ADDRESS = {"street": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}


@pytest.fixture
async def svc(pg_dsn):
    pool = await create_pool(pg_dsn, 2, 10)
    service = CommandService(store=PgCommandStore(pool), group_max=64)
    service.pool = pool
    yield service
    await pool.close()


def _body(ctype: str, data: dict, command_id: str | None = None, actor: dict = ADMIN) -> bytes:
    return json.dumps({"commandId": command_id or str(uuid.uuid4()), "commandType": ctype, **actor,
                       "data": data}).encode()


async def _send(svc: CommandService, ctype: str, data: dict, command_id: str | None = None) -> dict:
    return await svc.handle(_body(ctype, data, command_id), ctype, "application/json")


async def _setup(svc: CommandService, run: str, *, stock: int, credit: str = "100000") -> None:
    assert (await _send(svc, "RegisterCustomer", {"customerId": f"c-{run}", "name": "Cy", "email": "cy@example.com",
                                                  "creditLimit": credit}))["status"] == "accepted"
    assert (await _send(svc, "AddProduct", {"productId": f"p-{run}", "name": "P", "price": "10",
                                            "stock": stock}))["status"] == "accepted"


def _order(run: str, qty: int = 1, customer: str | None = None) -> dict:
    return {"customerId": customer or f"c-{run}", "items": [{"productId": f"p-{run}", "quantity": qty}],
            "shippingAddress": ADDRESS}


async def _transactions_of(pool: asyncpg.Pool, positions: list[int]) -> int:
    """How many transactions wrote the events at these positions (rows of one transaction share xmin)."""
    return await pool.fetchval("SELECT count(DISTINCT xmin::text) FROM events WHERE position = ANY($1::bigint[])",
                               positions)


async def test_orders_arriving_together_share_one_transaction_and_see_each_others_stock(svc):
    run = uuid.uuid4().hex[:8]
    await _setup(svc, run, stock=10)
    ids = [f"po{i}-{run}" for i in range(30)]
    missing = f"missing-{run}"
    # 30 orders of 1 against a stock of 10, and one for an unknown customer in the middle
    replies = await asyncio.gather(*[_send(svc, "PlaceOrder", _order(run), cid) for cid in ids[:15]],
                                   _send(svc, "PlaceOrder", _order(run, customer=missing), f"nf-{run}"),
                                   *[_send(svc, "PlaceOrder", _order(run), cid) for cid in ids[15:]])
    nf = replies.pop(15)
    assert nf["status"] == "rejected" and nf["error"]["code"] == "not_found"
    accepted = [r for r in replies if r["status"] == "accepted"]
    assert [r["commandId"] for r in accepted] == ids[:10]  # in arrival order
    assert {r["error"]["code"] for r in replies if r["status"] == "rejected"} == {"insufficient_stock"}
    positions = [r["position"] for r in accepted]
    assert positions == list(range(positions[0], positions[0] + 10))
    assert await _transactions_of(svc.pool, positions) == 1  # one group, one commit
    assert svc.group.fallbacks == 0
    assert await svc.pool.fetchval("SELECT stock FROM products WHERE id = $1", f"p-{run}") == 0
    # every command has its stored reply and its audit row, accepted or rejected
    assert await svc.pool.fetchval("SELECT count(*) FROM command_replies WHERE command_id = ANY($1::text[])",
                                   ids + [f"nf-{run}"]) == 31
    assert await svc.pool.fetchval("SELECT count(*) FROM command_audit WHERE command_id = ANY($1::text[])",
                                   ids + [f"nf-{run}"]) == 31
    head = await svc.pool.fetchval("SELECT array_agg(position ORDER BY position) FROM events")
    assert head == list(range(1, len(head) + 1))  # gap-free


async def test_credit_check_sees_the_orders_placed_earlier_in_the_same_group(svc):
    run = uuid.uuid4().hex[:8]
    await _setup(svc, run, stock=100, credit="30")  # three orders of 10
    replies = await asyncio.gather(*(_send(svc, "PlaceOrder", _order(run)) for _ in range(8)))
    assert [r["status"] for r in replies] == ["accepted"] * 3 + ["rejected"] * 5
    assert {r["error"]["code"] for r in replies[3:]} == {"credit_limit_exceeded"}
    assert await _transactions_of(svc.pool, [r["position"] for r in replies[:3]]) == 1
    assert await svc.pool.fetchval("SELECT stock FROM products WHERE id = $1", f"p-{run}") == 97


async def test_a_repeated_command_id_in_a_group_runs_the_group_one_by_one(svc):
    run = uuid.uuid4().hex[:8]
    await _setup(svc, run, stock=100)
    twice = f"twice-{run}"
    replies = await asyncio.gather(_send(svc, "PlaceOrder", _order(run)),
                                   _send(svc, "PlaceOrder", _order(run), twice),
                                   _send(svc, "PlaceOrder", _order(run)),
                                   _send(svc, "PlaceOrder", _order(run, qty=2), twice),
                                   _send(svc, "PlaceOrder", _order(run)))
    assert svc.group.fallbacks == 1  # the second append of `twice` failed the group
    assert all(r["status"] == "accepted" for r in replies)
    assert replies[1] == replies[3]  # the stored first reply
    assert len({r["position"] for r in replies}) == 4
    # one order for `twice`, the others once each: 4 orders of 1 (the quantity 2 never ran)
    assert await svc.pool.fetchval("SELECT stock FROM products WHERE id = $1", f"p-{run}") == 96
    head = await svc.pool.fetchval("SELECT array_agg(position ORDER BY position) FROM events")
    assert head == list(range(1, len(head) + 1))


async def test_each_command_of_a_group_keeps_its_own_trace_context(svc):
    run = uuid.uuid4().hex[:8]
    await _setup(svc, run, stock=100)
    trace_ids = [int(uuid.uuid4().hex, 16) for _ in range(4)]

    async def in_trace(trace_id: int) -> dict:
        span = NonRecordingSpan(SpanContext(trace_id, 0x1234, is_remote=False, trace_flags=TraceFlags(1)))
        with trace.use_span(span):
            return await _send(svc, "PlaceOrder", _order(run))

    replies = await asyncio.gather(*(in_trace(t) for t in trace_ids))
    assert await _transactions_of(svc.pool, [r["position"] for r in replies]) == 1
    stored = await svc.pool.fetch("SELECT position, trace_context->>'traceparent' AS tp FROM events "
                                  "WHERE position = ANY($1::bigint[]) ORDER BY position", [r["position"] for r in replies])
    assert [row["tp"].split("-")[1] for row in stored] == [f"{t:032x}" for t in trace_ids]


async def test_group_max_one_runs_each_command_in_its_own_transaction(pg_dsn):
    pool = await create_pool(pg_dsn, 2, 10)
    try:
        svc = CommandService(store=PgCommandStore(pool), group_max=1)
        run = uuid.uuid4().hex[:8]
        await _setup(svc, run, stock=10)
        replies = await asyncio.gather(*(_send(svc, "PlaceOrder", _order(run)) for _ in range(5)))
        assert await _transactions_of(pool, [r["position"] for r in replies]) == 5
    finally:
        await pool.close()


async def test_a_mixed_group_reads_the_database_and_sees_each_change(svc):
    run = uuid.uuid4().hex[:8]
    await _setup(svc, run, stock=1)
    replies = await asyncio.gather(_send(svc, "PlaceOrder", _order(run)),
                                   _send(svc, "RestockProduct", {"productId": f"p-{run}", "quantity": 5}),
                                   _send(svc, "PlaceOrder", _order(run, qty=3)),
                                   _send(svc, "PlaceOrder", _order(run, qty=3)))
    assert [r["status"] for r in replies] == ["accepted", "accepted", "accepted", "rejected"]
    assert replies[3]["error"]["code"] == "insufficient_stock"
    assert await _transactions_of(svc.pool, [r["position"] for r in replies[:3]]) == 1
    assert await svc.pool.fetchval("SELECT stock FROM products WHERE id = $1", f"p-{run}") == 2


async def test_an_order_id_twice_in_one_group_is_accepted_once_then_a_duplicate(svc):
    run = uuid.uuid4().hex[:8]
    await _setup(svc, run, stock=10)
    replies = await asyncio.gather(*(_send(svc, "PlaceOrder", {**_order(run), "orderId": f"o-{run}"}) for _ in range(3)),
                                   _send(svc, "PlaceOrder", _order(run)))
    assert [r["status"] for r in replies] == ["accepted", "rejected", "rejected", "accepted"]
    assert {r["error"]["code"] for r in replies[1:3]} == {"duplicate"}
    assert await _transactions_of(svc.pool, [replies[0]["position"], replies[3]["position"]]) == 1
    assert svc.group.fallbacks == 0
    assert await svc.pool.fetchval("SELECT stock FROM products WHERE id = $1", f"p-{run}") == 8
    assert await svc.pool.fetchval("SELECT open_cents FROM customers WHERE id = $1", f"c-{run}") == 2000
