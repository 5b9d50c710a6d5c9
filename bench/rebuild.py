"""Rebuild speed: `projector-service rebuild` over a synthetic history of --events events.

The history is written straight into a fresh command-side event store (valid envelopes of
every event type: customers, products, orders placed, shipped, delivered, cancelled,
refunded), the command service runs in-process to serve the replay, and the rebuild replays it
over RabbitMQ into a fresh MongoDB database. The command service runs as its own process
(`command-service serve`), the rebuild in this one. Prints the events/s of the replay (first event to
the whole history applied) and of the whole rebuild (including the fixed waits of the switch).

    scripts/with-mongo.sh .venv/bin/python bench/rebuild.py --events 100000

Uses its own vhost, PostgreSQL database and MongoDB database, removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import psutil

from isolation import isolated
from projector_service.config import ProjectorSettings
from projector_service.wiring import rebuild

ADDRESS = {"street": "1 Bench St", "city": "Load", "state": "LD", "zip": "00000"}


def history(n: int, seed: int = 7) -> list[tuple]:
    """Rows of `events` (position, event_id, aggregate_type, aggregate_id, version, event_type,
    envelope, created_at, published_at)."""
    rnd = random.Random(seed)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows: list[tuple] = []
    customers = [f"c{i}" for i in range(max(10, n // 100))]
    products = {f"p{i}": 1_000_000 for i in range(max(5, n // 500))}
    open_orders: list[tuple[str, int, str]] = []  # (order id, version, status)

    def add(atype: str, agg: str, version: int, etype: str, data: dict) -> None:
        pos = len(rows) + 1
        ts = t0 + timedelta(seconds=pos)
        env = {"eventId": str(uuid.uuid4()), "eventType": etype, "aggregateId": agg, "aggregateType": atype,
               "version": version, "position": pos, "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
               "correlationId": "bench", "causationId": "bench", "schemaVersion": 1, "data": data,
               "metadata": {"userId": "bench"}}
        rows.append((pos, uuid.UUID(env["eventId"]), atype, agg, version, etype, json.dumps(env), ts, ts))

    for c in customers:
        add("customer", c, 1, "CustomerRegistered", {"customerId": c, "name": f"Customer {c}",
                                                     "email": f"{c}@example.com", "creditLimit": "1000000.00"})
    for p in products:
        add("product", p, 1, "ProductAdded", {"productId": p, "name": f"Product {p}", "price": "2.50",
                                              "stock": products[p]})
    n_orders = 0
    while len(rows) < n:
        if open_orders and rnd.random() < 0.45:
            i = rnd.randrange(len(open_orders))
            oid, version, status = open_orders[i]
            cid = "c0"
            nxt = {"placed": rnd.choice(["OrderShipped", "OrderShipped", "OrderCancelled"]),
                   "shipped": "OrderDelivered", "delivered": "OrderRefunded"}[status]
            data: dict = {"orderId": oid, "customerId": cid}
            if nxt == "OrderShipped":
                data["trackingNumber"] = f"T{oid}"
            elif nxt in ("OrderCancelled", "OrderRefunded"):
                data["reason"] = "bench"
                if nxt == "OrderCancelled":
                    data["items"] = []
            add("order", oid, version + 1, nxt, data)
            new_status = {"OrderShipped": "shipped", "OrderDelivered": "delivered"}.get(nxt)
            if new_status:
                open_orders[i] = (oid, version + 1, new_status)
            else:
                open_orders[i] = open_orders[-1]
                open_orders.pop()
            continue
        n_orders += 1
        oid, cid = f"o{n_orders}", rnd.choice(customers)
        items = []
        for p in rnd.sample(list(products), k=min(3, len(products))):
            products[p] -= 1
            items.append({"productId": p, "name": f"Product {p}", "quantity": 1, "unitPrice": "2.50",
                          "lineTotal": "2.50", "stock": products[p]})
        total = f"{2.5 * len(items):.2f}"
        add("order", oid, 1, "OrderPlaced", {"orderId": oid, "customerId": cid, "customer": {
            "id": cid, "name": f"Customer {cid}", "email": f"{cid}@example.com"}, "items": items,
            "totalAmount": total, "shippingAddress": ADDRESS})
        open_orders.append((oid, 1, "placed"))
    return rows[:n]


def _cpu(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


def _listener(url: str) -> psutil.Process | None:
    """The process listening on the port of `url` (the MongoDB stand-in), if it is visible."""
    from urllib.parse import urlsplit

    port = urlsplit(url).port or 27017
    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid:
                return psutil.Process(c.pid)
    except psutil.Error:
        pass
    return None


def _named(*names: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] in names]


class CpuMeter:
    """CPU seconds (user + system) of the processes a rebuild uses, from `start()` to
    `stop()`: the rebuild (this process), the command service serving the replay, the MongoDB
    server, and the shared RabbitMQ and PostgreSQL servers (other work on them counts too)."""

    def __init__(self, command_service: psutil.Process | None, mongo_url: str) -> None:
        self._procs: dict[str, list[psutil.Process]] = {
            "rebuild": [psutil.Process()],
            "command service": [command_service] if command_service else [],
            "mongodb": [p for p in [_listener(mongo_url)] if p],
            "rabbitmq (shared)": _named("beam.smp"),
        }
        self._start: dict[str, dict[int, float]] = {}

    def _pg(self) -> list[psutil.Process]:
        return _named("postgres")

    def start(self) -> None:
        self._procs["postgresql (shared)"] = self._pg()
        self._start = {k: {p.pid: _cpu(p) for p in ps} for k, ps in self._procs.items()}

    def stop(self) -> dict[str, float]:
        self._procs["postgresql (shared)"] = self._pg()  # backends started meanwhile count whole
        return {k: sum(_cpu(p) - self._start.get(k, {}).get(p.pid, 0.0) for p in ps) for k, ps in self._procs.items()}


def cpu_lines(cpu: dict[str, float], events: int) -> list[str]:
    per = 100_000 / events
    own = ("rebuild", "command service", "mongodb")
    lines = [f"cpu: {k} {v:.1f} s ({v * per:.1f} s per 100k events)" for k, v in cpu.items()]
    total = sum(cpu[k] for k in own if k in cpu)
    everything = sum(cpu.values())
    lines.append(f"cpu total: rebuild + command service + mongodb {total:.1f} s ({total * per:.1f} s per 100k "
                 f"events); with rabbitmq and postgresql {everything:.1f} s ({everything * per:.1f} s per 100k)")
    return lines


async def main(args: argparse.Namespace) -> None:
    async with isolated("bench-rebuild") as iso:
        vhost_url, dsn, mongo_url, dbname = iso.amqp_url, iso.dsn, iso.mongo_url, iso.mongo_db
        proc = None
        try:
            rows = history(args.events)
            n = len(rows)
            conn = await asyncpg.connect(dsn)
            try:
                await conn.copy_records_to_table("events", records=rows, columns=[
                    "position", "event_id", "aggregate_type", "aggregate_id", "version", "event_type", "envelope",
                    "created_at", "published_at"])
                await conn.execute("UPDATE position_counter SET value = $1", n)
            finally:
                await conn.close()
            del rows  # what the rebuild holds is measured below, not the bench's copy of the history
            import gc

            gc.collect()
            print(f"history: {n} events in the event store")
            proc = subprocess.Popen([str(Path(sys.executable).parent / "command-service"), "serve"],
                                    env={**os.environ, "AMQP_URL": vhost_url, "POSTGRES_DSN": dsn, "HEALTH_PORT": "-1",
                                         "LOG_LEVEL": "WARNING"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(3.0)
            settings = ProjectorSettings(amqp_url=vhost_url, mongo_url=mongo_url, mongo_db=dbname, health_port=-1,
                                         rebuild_batch=args.batch, rebuild_prefetch=args.prefetch,
                                         rebuild_per_message=args.per_message)
            marks: dict[str, float] = {}
            meter = CpuMeter(psutil.Process(proc.pid), mongo_url)
            meter.start()
            start = time.monotonic()

            def progress(p) -> None:
                if p.watermark >= n and "replayed" not in marks:
                    marks["replayed"] = time.monotonic() - start
                print(f"  [{p.phase}] watermark {p.watermark}/{n}, {p.rate:,.0f} events/s, {p.elapsed:.1f} s",
                      flush=True)

            if args.cli:  # the command an operator runs, as its own process
                env = {**os.environ, "AMQP_URL": vhost_url, "MONGO_URL": mongo_url, "MONGO_DB": dbname,
                       "REBUILD_BATCH": str(args.batch), "REBUILD_PREFETCH": str(args.prefetch),
                       "REBUILD_PER_MESSAGE": str(args.per_message), "LOG_LEVEL": "WARNING"}
                out = await asyncio.to_thread(subprocess.run, [str(Path(sys.executable).parent / "projector-service"),
                                                               "rebuild"], env=env, capture_output=True, text=True)
                total = time.monotonic() - start
                print(out.stderr.strip()[-600:], out.stdout.strip(), f"exit {out.returncode}", sep="\n")
                print(f"whole rebuild (CLI process): {total:.1f} s = {n / total:,.0f} events/s")
                return
            me = psutil.Process()
            rss = [me.memory_info().rss, 0]

            async def sample() -> None:
                while True:
                    rss[1] = max(rss[1], me.memory_info().rss)
                    await asyncio.sleep(0.1)

            sampler = asyncio.create_task(sample())
            result = await rebuild(settings, progress)
            total = time.monotonic() - start
            cpu = meter.stop()
            sampler.cancel()
            replayed = marks.get("replayed", total)
            print(f"replay: {n} events in {replayed:.1f} s = {n / replayed:,.0f} events/s")
            print(f"whole rebuild (with the switch's waits): {total:.1f} s = {n / total:,.0f} events/s; "
                  f"set {result.view_set} live, watermark {result.watermark}")
            print("\n".join(cpu_lines(cpu, n)))
            print(f"rebuild process RSS: {rss[0] / 2**20:.0f} MB at the start, at most {rss[1] / 2**20:.0f} MB")
            print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(20)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--prefetch", type=int, default=40)
    ap.add_argument("--per-message", type=int, default=100)
    ap.add_argument("--cli", action="store_true", help="run `projector-service rebuild` as a process")
    ap.add_argument("--verbose", action="store_true", help="log the rebuild's phases (with timestamps)")
    parsed = ap.parse_args()
    if parsed.verbose:
        import logging

        logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.WARNING)
        logging.getLogger("projector_service.application.rebuild").setLevel(logging.INFO)

    asyncio.run(main(parsed))
