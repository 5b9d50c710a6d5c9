"""`make bench`: measures the system and, in the same run, the raw baselines it is compared
with, on the same broker and databases. Prints a table, writes bench/results/results.json
and bench/results/chart.png.

Each phase runs for --seconds (default 8) with a fixed number of requests in flight.
Everything runs on its own vhost, PostgreSQL database and MongoDB database, removed after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import aio_pika
import asyncpg
import psutil
from motor.motor_asyncio import AsyncIOMotorClient
from rich.console import Console
from rich.table import Table

from command_service.adapters.postgres import apply_migrations, ensure_database
from cqrs_shared.messaging.rpc import RpcClient, dumps, send_reply

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
console = Console()
ADMIN = {"userId": "bench", "metadata": {"roles": ["admin"]}}
ADDRESS = {"street": "1 Bench St", "city": "Load", "state": "LD", "zip": "00000"}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def load(fn, concurrency: int, seconds: float) -> dict:
    """Runs `fn` from `concurrency` workers for `seconds`; returns throughput and latencies (ms)."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        nonlocal errors
        i = 0
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            ok = await fn(n, i)
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += 0 if ok else 1
            i += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return {"throughput": len(latencies) / elapsed, "p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95),
            "p99_ms": pct(latencies, 99), "requests": len(latencies), "errors": errors, "concurrency": concurrency}


# ---- baselines --------------------------------------------------------------------------

async def echo_baseline(amqp_url: str, concurrency: int, seconds: float) -> dict:
    conn = await aio_pika.connect_robust(amqp_url)
    ch = await conn.channel()
    await ch.set_qos(prefetch_count=256)
    q = await ch.declare_queue(f"bench.echo.{uuid.uuid4().hex[:6]}", auto_delete=True)

    async def on_request(msg):
        await send_reply(ch, msg, {"echo": True})
        await msg.ack()

    await q.consume(on_request)
    client = await RpcClient.connect(amqp_url)
    try:
        async def call(n, i):
            return (await client.call_raw("", q.name, b'{"ping":1}'))["echo"]
        return await load(call, concurrency, seconds)
    finally:
        await client.close()
        await conn.close()


async def pg_baseline(dsn: str, concurrency: int, seconds: float) -> dict:
    pool = await asyncpg.create_pool(dsn, min_size=8, max_size=8)
    await pool.execute("CREATE TABLE IF NOT EXISTS bench_rows (id bigserial PRIMARY KEY, k text, v int)")
    try:
        async def tx(n, i):
            async with pool.acquire() as c, c.transaction():
                await c.execute("INSERT INTO bench_rows (k, v) VALUES ($1, $2)", f"{n}", i)
                await c.execute("INSERT INTO bench_rows (k, v) VALUES ($1, $2)", f"{n}", i + 1)
                await c.execute("INSERT INTO bench_rows (k, v) VALUES ($1, $2)", f"{n}", i + 2)
            return True
        return await load(tx, concurrency, seconds)
    finally:
        await pool.execute("DROP TABLE bench_rows")
        await pool.close()


async def mongo_baseline(url: str, db: str, concurrency: int, seconds: float) -> dict:
    client = AsyncIOMotorClient(url)
    col = client[db]["bench_docs"]
    await col.insert_many([{"_id": i, "v": "x" * 200} for i in range(1000)])
    try:
        async def find(n, i):
            return await col.find_one({"_id": (n * 7919 + i) % 1000}) is not None
        return await load(find, concurrency, seconds)
    finally:
        await col.drop()
        client.close()


# ---- the system -------------------------------------------------------------------------

class Services:
    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env, self.logdir, self.procs = env, logdir, {}

    def start(self) -> None:
        for name in ("command-service", "projector-service", "query-service"):
            log = self.logdir / f"{name}.log"
            self.procs[name] = (subprocess.Popen([str(BIN / name), "serve"], env=self.env,
                                                 stdout=log.open("wb"), stderr=subprocess.STDOUT), log)
        for name, (proc, log) in self.procs.items():
            deadline = time.monotonic() + 60
            while f"{name} ready" not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start:\n{log.read_text()}")
                time.sleep(0.1)

    def rss_mb(self) -> dict[str, float]:
        return {n: psutil.Process(p.pid).memory_info().rss / 2**20 for n, (p, _) in self.procs.items()}

    def stop(self) -> None:
        for proc, _ in self.procs.values():
            proc.terminate()
        for proc, _ in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


async def seed(client: RpcClient, run: str, customers: int, products: int) -> None:
    for i in range(customers):
        r = await client.send_command({"commandType": "RegisterCustomer", **ADMIN, "data": {
            "customerId": f"bc{i}-{run}", "name": f"Bench {i}", "email": f"b{i}@example.com", "creditLimit": "100000000"}})
        assert r["status"] == "accepted", r
    for i in range(products):
        r = await client.send_command({"commandType": "AddProduct", **ADMIN, "data": {
            "productId": f"bp{i}-{run}", "name": f"Item {i}", "price": "1.25", "stock": 10_000_000}})
        assert r["status"] == "accepted", r


def place_order(run: str, n: int, i: int, customers: int, products: int) -> dict:
    return {"commandType": "PlaceOrder", **ADMIN, "data": {
        "customerId": f"bc{(n * 31 + i) % customers}-{run}",
        "items": [{"productId": f"bp{(n + i) % products}-{run}", "quantity": 1}], "shippingAddress": ADDRESS}}


async def lag_phase(client: RpcClient, run: str, rate: float, seconds: float, customers: int, products: int) -> dict:
    """Commands at a steady rate; for each, the time from its accepted reply until the query
    service answers with the view at its position (read-your-writes)."""
    lags: list[float] = []
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        r = await client.send_command(place_order(run, 0, i, customers, products))
        t_reply = time.perf_counter()
        q = await client.query({"queryType": "GetOrderDetails", "minPosition": r["position"], "maxWaitMs": 10000,
                                "parameters": {"orderId": r["aggregateId"]}})
        if q["status"] == "ok":
            lags.append((time.perf_counter() - t_reply) * 1000)
        else:
            failures += 1

    tasks = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return {"rate": rate, "commands": n, "p50_ms": pct(lags, 50), "p95_ms": pct(lags, 95), "p99_ms": pct(lags, 99),
            "failures": failures}


# ---- report -----------------------------------------------------------------------------

def goals(r: dict) -> list[tuple[str, str, str, bool]]:
    out = []
    po64, echo64 = r["place_order"]["64"]["throughput"], r["baseline"]["echo_64"]["throughput"]
    out.append(("PlaceOrder c=64 >= 50% of echo c=64", f"{po64:,.0f}/s vs {echo64:,.0f}/s", f"{po64 / echo64:.0%}", po64 >= 0.5 * echo64))
    out.append(("PlaceOrder c=64 >= 2x nameko echo (513/s measured here)", f"{po64:,.0f}/s", f"{po64 / 513:.2f}x", po64 >= 2 * 513))
    p50 = r["place_order"]["1"]["p50_ms"]
    out.append(("PlaceOrder p50 c=1 <= 3 ms", f"{p50:.2f} ms", f"{p50 / 3:.2f}x of goal", p50 <= 3))
    lag = r["lag"]["p99_ms"]
    out.append(("lag p99 <= 50 ms at 200/s", f"{lag:.1f} ms", f"{lag / 50:.2f}x of goal", lag <= 50))
    q64 = r["query"]["64"]["throughput"]
    out.append(("query c=64 >= 70% of echo c=64", f"{q64:,.0f}/s", f"{q64 / echo64:.0%}", q64 >= 0.7 * echo64))
    rb = r.get("rebuild", {}).get("events_per_s")
    out.append(("rebuild >= 5,000 events/s", f"{rb:,.0f}/s" if rb else "not measured (no rebuild command yet)",
                f"{rb / 5000:.2f}x" if rb else "-", bool(rb and rb >= 5000)))
    idle = max(r["rss_mb"]["idle"].values())
    out.append(("idle RSS <= 100 MB per service", f"max {idle:.0f} MB", f"{idle / 100:.2f}x of goal", idle <= 100))
    return out


def report(r: dict) -> None:
    t = Table(title="Measurements (each with its baseline)")
    for col in ("what", "throughput/s", "p50 ms", "p95 ms", "p99 ms", "baseline", "ratio"):
        t.add_column(col, justify="right" if col != "what" else "left")
    echo = r["baseline"]

    def row(name, m, base=None, base_name=""):
        ratio = f"{m['throughput'] / base['throughput']:.0%}" if base else ""
        t.add_row(name, f"{m['throughput']:,.0f}", f"{m['p50_ms']:.2f}", f"{m['p95_ms']:.2f}", f"{m['p99_ms']:.2f}",
                  base_name, ratio)

    row("echo RPC c=1 (aio-pika)", echo["echo_1"])
    row("echo RPC c=64 (aio-pika)", echo["echo_64"])
    row("asyncpg 3-row tx c=64", echo["pg_tx_64"])
    row("motor find_one c=32", echo["mongo_find_32"])
    for c in ("1", "16", "64"):
        b = echo["echo_1"] if c == "1" else echo["echo_64"]
        row(f"PlaceOrder c={c}", r["place_order"][c], b, "echo")
    row("GetOrderDetails c=1", r["query"]["1"], echo["echo_1"], "echo c=1")
    row("GetOrderDetails c=64", r["query"]["64"], echo["echo_64"], "echo c=64")
    console.print(t)
    lag = r["lag"]
    console.print(f"command -> view lag at {lag['rate']:.0f}/s: p50 {lag['p50_ms']:.1f} ms, p95 {lag['p95_ms']:.1f} ms, "
                  f"p99 {lag['p99_ms']:.1f} ms ({lag['failures']} failures)")
    m = Table(title="Memory (RSS, MB)")
    m.add_column("service")
    m.add_column("idle", justify="right")
    m.add_column("loaded", justify="right")
    for name in r["rss_mb"]["idle"]:
        m.add_row(name, f"{r['rss_mb']['idle'][name]:.0f}", f"{r['rss_mb']['loaded'][name]:.0f}")
    console.print(m)
    g = Table(title="Goals")
    for col in ("goal", "measured", "ratio", "met"):
        g.add_column(col)
    for name, measured, ratio, met in goals(r):
        g.add_row(name, measured, ratio, "[green]yes[/]" if met else "[red]no[/]")
    console.print(g)


def chart(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = ["echo c=1", "echo c=64", "PlaceOrder c=1", "PlaceOrder c=16", "PlaceOrder c=64", "Query c=1", "Query c=64"]
    vals = [r["baseline"]["echo_1"], r["baseline"]["echo_64"], r["place_order"]["1"], r["place_order"]["16"],
            r["place_order"]["64"], r["query"]["1"], r["query"]["64"]]
    colors = ["#999999", "#999999"] + ["#1f77b4"] * 3 + ["#2ca02c"] * 2
    a.barh(names, [v["throughput"] for v in vals], color=colors)
    a.set_xlabel("requests/s")
    a.set_title("Throughput (grey: raw aio-pika RPC baseline)")
    a.invert_yaxis()
    lat_names = ["PlaceOrder c=1", "PlaceOrder c=64", "Query c=1", "Query c=64", "lag @200/s"]
    lat = [r["place_order"]["1"], r["place_order"]["64"], r["query"]["1"], r["query"]["64"], r["lag"]]
    x = range(len(lat_names))
    for k, (key, off) in enumerate((("p50_ms", -0.25), ("p95_ms", 0), ("p99_ms", 0.25))):
        b.bar([i + off for i in x], [v[key] for v in lat], width=0.25, label=key.replace("_ms", ""))
    b.set_xticks(list(x), lat_names, rotation=20)
    b.set_ylabel("ms")
    b.set_yscale("log")
    b.set_title("Latency")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---- main -------------------------------------------------------------------------------

async def main(args: argparse.Namespace) -> int:
    amqp = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    pg = os.environ.get("POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/cqrs")
    mongo = os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017")
    run = uuid.uuid4().hex[:8]
    vhost = f"bench-{run}"
    u = urllib.parse.urlsplit(amqp)
    vhost_url = urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + vhost, "", ""))
    p = urllib.parse.urlsplit(pg)
    dsn = urllib.parse.urlunsplit((p.scheme, p.netloc, f"/bench_{run}", "", ""))
    mongo_db = f"bench_{run}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, u.username or "guest", ".*", ".*", ".*"], check=True)
    await ensure_database(dsn)
    apply_migrations(dsn)
    RESULTS.mkdir(parents=True, exist_ok=True)
    s = args.seconds
    r: dict = {"run": run, "seconds_per_phase": s, "machine": {"cpus": os.cpu_count()}, "baseline": {}}
    services = Services({**os.environ, "AMQP_URL": vhost_url, "POSTGRES_DSN": dsn, "MONGO_URL": mongo,
                         "MONGO_DB": mongo_db, "PG_POOL_MAX": "16", "HEALTH_PORT": "0"}, RESULTS)
    try:
        with console.status("baselines") as st:
            st.update("baseline: aio-pika echo RPC c=1")
            r["baseline"]["echo_1"] = await echo_baseline(vhost_url, 1, s)
            st.update("baseline: aio-pika echo RPC c=64")
            r["baseline"]["echo_64"] = await echo_baseline(vhost_url, 64, s)
            st.update("baseline: asyncpg 3-row transaction c=64")
            r["baseline"]["pg_tx_64"] = await pg_baseline(dsn, 64, s)
            st.update("baseline: motor find_one c=32")
            r["baseline"]["mongo_find_32"] = await mongo_baseline(mongo, mongo_db, 32, s)
        console.print("baselines done")
        services.start()
        await asyncio.sleep(2)
        r["rss_mb"] = {"idle": services.rss_mb()}
        loaded = {k: 0.0 for k in r["rss_mb"]["idle"]}

        async def sample() -> None:
            while True:
                for k, v in services.rss_mb().items():
                    loaded[k] = max(loaded[k], v)
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample())
        client = await RpcClient.connect(vhost_url)
        customers, products = 200, 50
        with console.status("seeding customers and products"):
            await seed(client, run, customers, products)
        r["place_order"] = {}
        for c in (1, 16, 64):
            with console.status(f"PlaceOrder at concurrency {c} for {s:.0f} s"):
                async def po(n, i, c=c):
                    return (await client.send_command(place_order(run, n + c * 1000, i, customers, products)))["status"] == "accepted"
                r["place_order"][str(c)] = await load(po, c, s)
            console.print(f"PlaceOrder c={c}: {r['place_order'][str(c)]['throughput']:,.0f}/s")
        with console.status("waiting for the projector to catch up"):
            last = await client.send_command(place_order(run, 0, 0, customers, products))
            await client.query({"queryType": "GetOrderDetails", "minPosition": last["position"], "maxWaitMs": 30000,
                                "parameters": {"orderId": last["aggregateId"]}}, timeout=60)
        with console.status(f"lag at 200 commands/s for {s:.0f} s"):
            r["lag"] = await lag_phase(client, run, 200, s, customers, products)
        r["query"] = {}
        for c in (1, 64):
            with console.status(f"GetOrderDetails at concurrency {c} for {s:.0f} s"):
                async def q(n, i):
                    return (await client.query({"queryType": "GetOrderDetails",
                                                "parameters": {"orderId": last["aggregateId"]}}))["status"] == "ok"
                r["query"][str(c)] = await load(q, c, s)
        sampler.cancel()
        r["rss_mb"]["loaded"] = loaded
        await client.close()
    finally:
        services.stop()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)
        conn = await asyncpg.connect(urllib.parse.urlunsplit((p.scheme, p.netloc, "/postgres", "", "")))
        await conn.execute(f'DROP DATABASE IF EXISTS "bench_{run}" WITH (FORCE)')
        await conn.close()
        m = AsyncIOMotorClient(mongo)
        await m.drop_database(mongo_db)
        m.close()
    r["goals"] = [{"goal": g, "measured": m_, "ratio": ra, "met": ok} for g, m_, ra, ok in goals(r)]
    (RESULTS / "results.json").write_text(json.dumps(r, indent=2))
    chart(r, RESULTS / "chart.png")
    report(r)
    console.print(f"written {RESULTS / 'results.json'} and {RESULTS / 'chart.png'}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each phase")
    sys.exit(asyncio.run(main(ap.parse_args())))
