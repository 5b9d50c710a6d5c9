"""Asks the query service every question the model can answer and compares the answers.

`event_times(dsn)` reads the commit times from the command side's `events` table, the one
input the model cannot compute. `check_events(...)` checks that table against the accepted
replies (one event per accepted command, at its position, positions 1..N without gaps).
`compare_all(...)` then runs the queries with `minPosition` = the last accepted position.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .model import EVENT_OF, STATUSES, Model
from .workload import Sent


async def event_rows(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch("SELECT position, aggregate_id, version, event_type, envelope::text AS envelope "
                                "FROM events ORDER BY position")
    finally:
        await conn.close()


def event_times(rows: list[asyncpg.Record]) -> dict[int, str]:
    return {r["position"]: json.loads(r["envelope"])["timestamp"] for r in rows}


def check_events(records: list[Sent], rows: list[asyncpg.Record]) -> list[str]:
    """Every accepted command appended exactly one event, at its reply's position, for its
    aggregate and version; no event without an accepted command; positions gap-free."""
    problems = []
    accepted: dict[str, Sent] = {}
    for s in records:
        if s.reply and s.reply.get("status") == "accepted":
            accepted.setdefault(s.command["commandId"], s)
    by_pos = {r["position"]: r for r in rows}
    if rows and [r["position"] for r in rows] != list(range(1, len(rows) + 1)):
        problems.append("event positions are not 1..N without gaps")
    causes = Counter(json.loads(r["envelope"]).get("causationId") for r in rows)
    for cid, s in accepted.items():
        r = by_pos.get(s.reply["position"])
        want = (s.reply["aggregateId"], s.reply["version"], EVENT_OF[s.type])
        if r is None or (r["aggregate_id"], r["version"], r["event_type"]) != want:
            problems.append(f"{s.type} {cid}: event at {s.reply['position']} is "
                            f"{None if r is None else (r['aggregate_id'], r['version'], r['event_type'])}, "
                            f"expected {want}")
        if causes[cid] != 1:
            problems.append(f"{s.type} {cid}: {causes[cid]} events caused by it (applied more than once?)")
    if len(rows) != len(accepted):
        problems.append(f"{len(rows)} events for {len(accepted)} accepted commands")
    return problems


@dataclass
class Comparison:
    counts: Counter = field(default_factory=Counter)
    seconds: Counter = field(default_factory=Counter)  # summed latency per query type
    mismatches: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


Query = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def compare_all(query: Query, model: Model, *, seed: int = 0, searches: int = 100,
                      concurrency: int = 32, max_wait_ms: int = 30000,
                      records: list[Sent] | None = None) -> Comparison:
    """Compares every answer the model can state: each order's details (with and without
    history), each customer's summary and every page of its order list (plus status
    filters), a seeded sample of searches, daily metrics, popular products and each
    product's availability, plus unknown ids (not_found / empty), including the ids named
    by rejected creating commands in `records` (a rejected command changes nothing)."""
    rng = random.Random(seed)
    out = Comparison()
    sem = asyncio.Semaphore(concurrency)
    min_position = model.last_position

    async def ask(qtype: str, params: dict[str, Any], expected: dict[str, Any] | None) -> None:
        async with sem:
            t0 = time.perf_counter()
            reply = await query({"queryType": qtype, "parameters": params, "minPosition": min_position,
                                 "maxWaitMs": max_wait_ms})
            out.seconds[qtype] += time.perf_counter() - t0
        out.counts[qtype] += 1
        if expected is None:
            ok = reply.get("status") == "error" and (reply.get("error") or {}).get("code") == "not_found"
        else:
            ok = reply.get("status") == "ok" and reply.get("result") == expected
        if not ok:
            out.mismatches.append(f"{qtype} {json.dumps(params)}:\n  expected {json.dumps(expected)}\n"
                                  f"  got      {json.dumps(reply)}")

    named = rejected_ids(records or [])
    jobs: list[Awaitable[None]] = []
    for n, oid in enumerate(sorted(set(model.orders) | named["PlaceOrder"])):
        hist = n % 4 != 0
        jobs.append(ask("GetOrderDetails", {"orderId": oid, "includeHistory": hist}, model.order_details(oid, hist)))
    jobs.append(ask("GetOrderDetails", {"orderId": "no-such-order"}, None))

    for cid in sorted(set(model.customers) | named["RegisterCustomer"]):
        jobs.append(ask("GetCustomerSummary", {"customerId": cid}, model.customer_summary(cid)))
        size = rng.choice([2, 20, 20, 20])
        total = model.customer_orders(cid)["total"]
        last = max(1, -(-total // size)) + (1 if rng.random() < 0.2 else 0)  # sometimes one past the end
        for page in range(1, last + 1):  # every page
            jobs.append(ask("ListCustomerOrders", {"customerId": cid, "page": page, "pageSize": size},
                            model.customer_orders(cid, None, page, size)))
        status = rng.choice(STATUSES)
        jobs.append(ask("ListCustomerOrders", {"customerId": cid, "status": status},
                        model.customer_orders(cid, status)))
    jobs.append(ask("GetCustomerSummary", {"customerId": "no-such-customer"}, None))
    jobs.append(ask("ListCustomerOrders", {"customerId": "no-such-customer"}, model.customer_orders("no-such-customer")))

    dates = model.dates() or [dt.date.today().isoformat()]
    day = dt.date.fromisoformat
    around = [(day(dates[0]) - dt.timedelta(days=1)).isoformat(), *dates,
              (day(dates[-1]) + dt.timedelta(days=1)).isoformat()]
    texts = _search_texts(model, rng)
    for _ in range(searches):
        p: dict[str, Any] = {}
        if rng.random() < 0.6:
            p["text"] = rng.choice(texts)
        if rng.random() < 0.4:
            p["status"] = rng.choice(STATUSES)
        if rng.random() < 0.3:
            p["dateFrom"] = rng.choice(around[:-1])
        if rng.random() < 0.3:
            p["dateTo"] = rng.choice([d for d in around if d >= p.get("dateFrom", "")])
        if rng.random() < 0.3:
            p["minAmount"] = rng.choice(["0", "10", "25.5", "100", "250.99"])
        if rng.random() < 0.3:
            p["maxAmount"] = rng.choice(["50", "99.99", "300", "1000"])
        if rng.random() < 0.5:
            p["pageSize"] = rng.choice([1, 7, 20, 100])
        if rng.random() < 0.4:
            p["page"] = rng.choice([1, 2, 3, 50])
        args = {"text": p.get("text"), "status": p.get("status"), "date_from": p.get("dateFrom"),
                "date_to": p.get("dateTo"), "min_amount": p.get("minAmount"), "max_amount": p.get("maxAmount"),
                "page": p.get("page", 1), "page_size": p.get("pageSize", 20)}
        jobs.append(ask("SearchOrders", p, model.search_orders(**args)))

    for a, b in [(around[0], around[-1]), (dates[0], dates[0]), (dates[-1], dates[-1]),
                 ("2020-01-01", "2020-12-31")]:
        jobs.append(ask("GetDailyOrderMetrics", {"dateFrom": a, "dateTo": b}, model.daily_metrics(a, b)))
    for limit in (1, 5, 10, 100):
        jobs.append(ask("GetPopularProducts", {"limit": limit}, model.popular_products(limit=limit)))
    for a, b in [(dates[0], dates[-1]), (around[-1], around[-1]), (dates[-1], dates[-1])]:
        jobs.append(ask("GetPopularProducts", {"dateFrom": a, "dateTo": b, "limit": 100},
                        model.popular_products(a, b, 100)))
    jobs.append(ask("GetPopularProducts", {}, model.popular_products()))

    for pid in sorted(set(model.products) | named["AddProduct"]):
        jobs.append(ask("GetProductAvailability", {"productId": pid}, model.product_availability(pid)))
    jobs.append(ask("GetProductAvailability", {"productId": "no-such-product"}, None))

    await asyncio.gather(*jobs)
    return out


def rejected_ids(records: list[Sent]) -> dict[str, set[str]]:
    """Ids that only rejected creating commands named (never created by an accepted one)."""
    keys = {"PlaceOrder": "orderId", "RegisterCustomer": "customerId", "AddProduct": "productId"}
    out: dict[str, set[str]] = {t: set() for t in keys}
    created: set[str] = set()
    for s in records:
        if s.reply and s.reply.get("status") == "accepted" and s.type in keys:
            created.add(s.reply["aggregateId"])
    for s in records:
        if s.type in keys and s.reply and s.reply.get("status") == "rejected":
            v = (s.command.get("data") or {}).get(keys[s.type])
            if isinstance(v, str) and v.strip() and len(v) <= 64 and v not in created:
                out[s.type].add(v)
    return out


def _search_texts(model: Model, rng: random.Random) -> list[str]:
    """Fragments of order ids, names, emails and product names, in other cases, and misses."""
    texts = ["zzz-no-match", "@EXAMPLE.com", "ø", "ZOË", ".", "(", "+1", "-LEE"]
    customers = list(model.customers.values())
    products = list(model.products.values())
    orders = list(model.orders)
    for _ in range(30):
        if customers:
            c = rng.choice(customers)
            texts += [c.name.split()[-1].upper(), c.email[:8]]
        if products:
            texts.append(rng.choice(products).name.split()[1].lower())
        if orders:
            oid = rng.choice(orders)
            texts.append(oid[-4:])
    return texts
