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
import re
import signal
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

from isolation import isolated
from cqrs_shared.messaging.rpc import RpcClient, RpcTimeout, send_reply

# The raw limits measured on this 2-core machine by issue #7 (quiet machine). nameko is not a
# dependency: its echo figures are the issue's measurement, quoted for the "2x nameko" goal.
ISSUE = {"echo_1": 876, "echo_64": 1760, "nameko_echo_1": 409, "nameko_echo_64": 513,
         "faststream_request_1": 405, "faststream_request_64": 362, "confirmed_publish_256": 5650,
         "pg_tx_64": 2340, "mongo_find_32": 2110}
PHASES = ("place_order", "lag", "query", "rebuild")
COMMAND_ROUND_TRIPS = 4  # PostgreSQL round trips of a lone PlaceOrder (docs/architecture.md, "The path of one command")
HISTORY_EVENTS = 100_000  # the rebuild phase replays at least this many events

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
console = Console(width=None if sys.stdout.isatty() else 150)
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
            try:
                ok = await fn(n, i)
            except RpcTimeout:
                ok = False
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += 0 if ok else 1
            i += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return {"throughput": (len(latencies) - errors) / elapsed, "p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95),
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

def listening_pid(url: str) -> int | None:
    """The local process listening on the URL's port (the MongoDB server), if any."""
    port = urllib.parse.urlsplit(url).port or 27017
    return next((c.pid for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port), None)


def shared_cpu_s(mongo_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of this process (the bench client: the load generator shares the
    cores too) and of the servers, per process id: RabbitMQ (beam.smp), PostgreSQL (every
    backend) and the MongoDB server with pid `mongo_pid`."""
    me = psutil.Process().cpu_times()
    out = {"bench client": me.user + me.system}
    for proc in psutil.process_iter(["name", "cpu_times"]):
        name = proc.info["name"] or ""
        key = "rabbitmq" if name == "beam.smp" else "postgresql" if name.startswith("postgres") else \
            "mongodb" if proc.pid == mongo_pid else None
        if key and proc.info["cpu_times"] is not None:
            out[f"{key}:{proc.pid}"] = proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return out


async def with_cpu(work, mongo_pid: int | None = None) -> dict:
    """A baseline's figures with the CPU ms per request of the bench process (client and, for
    the echo, the echo server) and of the servers."""
    before = shared_cpu_s(mongo_pid)
    r = await work
    r["service_cpu_ms_per_request"] = {k: v * 1000 / r["requests"] for k, v in
                                       Services.cpu_delta(before, shared_cpu_s(mongo_pid)).items()}
    return r


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

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each service process and by the servers
        they use: RabbitMQ (beam.smp), PostgreSQL (all its processes: the servers are shared,
        so other clients' work counts too on a busy machine) and the MongoDB server listening
        on MONGO_URL's port. Per process id, so that a process that exits between two readings
        (a PostgreSQL backend) is not counted as negative time (see cpu_delta)."""
        out = {}
        for n, (p, _) in self.procs.items():
            t = psutil.Process(p.pid).cpu_times()
            out[n] = t.user + t.system
        return {**out, **shared_cpu_s(self._mongo_pid())}

    @staticmethod
    def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """CPU seconds between two cpu_s() readings by service and server; a process that
        started in between counts from zero, one that exited in between counts not at all
        (its last part is lost, a small undercount for short-lived PostgreSQL backends)."""
        out: dict[str, float] = {"rabbitmq": 0.0, "postgresql": 0.0, "mongodb": 0.0}
        for key, value in after.items():
            name = key.split(":")[0]
            out[name] = out.get(name, 0.0) + value - before.get(key, 0.0)
        return out

    def _mongo_pid(self) -> int | None:
        if not hasattr(self, "_mongo"):
            self._mongo = listening_pid(self.env.get("MONGO_URL", ""))
        return self._mongo

    def rss_mb(self) -> dict[str, float]:
        return {n: psutil.Process(p.pid).memory_info().rss / 2**20 for n, (p, _) in self.procs.items()}

    def profile(self, phase: str, fmt: str, seconds: float) -> list[subprocess.Popen]:
        """py-spy samples each service for `seconds` (--profile): a flame graph per service
        and phase, bench/results/profile-<phase>-<service>.svg (or, with raw, collapsed
        stacks in a .txt, one line per stack with its sample count)."""
        ext = "svg" if fmt == "flamegraph" else "txt"
        return [subprocess.Popen([str(BIN / "py-spy"), "record", "--nonblocking", "-r", "200", "-d", str(max(1, int(seconds))),
                                  "-f", fmt, "-o", str(RESULTS / f"profile-{phase}-{name}.{ext}"), "-p", str(p.pid)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for name, (p, _) in self.procs.items()]

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
        try:
            r = await client.send_command(place_order(run, 0, i, customers, products), timeout=60)
            t_reply = time.perf_counter()
            q = await client.query({"queryType": "GetOrderDetails", "minPosition": r["position"], "maxWaitMs": 30000,
                                    "parameters": {"orderId": r["aggregateId"]}}, timeout=40)
        except RpcTimeout:
            failures += 1
            return
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
    elapsed = time.perf_counter() - start
    return {"rate": rate, "commands": n, "answered_per_s": len(lags) / elapsed, "p50_ms": pct(lags, 50), "p95_ms": pct(lags, 95), "p99_ms": pct(lags, 99),
            "failures": failures}



async def measured(services: Services, work, profile: tuple[str, str] | None = None, seconds: float = 0) -> dict:
    """Runs a phase and adds what explains its figures on a shared machine: each service's
    CPU milliseconds per request (1000 / that is the most one core allows) and the 1-minute
    load average (other processes competing for the 2 cores). With `profile` (a phase name),
    py-spy samples every service during the phase."""
    spies = services.profile(*profile, seconds) if profile else []
    before = services.cpu_s()
    r = await work
    for spy in spies:
        await asyncio.to_thread(spy.wait)
    after = services.cpu_s()
    n = r.get("requests") or r.get("commands") or r.get("events") or 0
    r["service_cpu_ms_per_request"] = {k: v * 1000 / n for k, v in Services.cpu_delta(before, after).items()} if n else {}
    r["loadavg_1m"] = os.getloadavg()[0]
    return r


# ---- rebuild ----------------------------------------------------------------------------

async def rebuild_phase(env: dict[str, str], events: int, timeout: float) -> dict:
    """Rebuild speed with bench/rebuild.py (the projector's own benchmark): a synthetic history
    of `events` events in a fresh event store served by `command-service serve`, rebuilt by
    `projector-service`'s rebuild into a fresh MongoDB database, on a vhost and databases of
    its own. Returns the replay's and the whole rebuild's events/s (the latter includes the
    switch's fixed waits)."""
    script = ROOT / "bench" / "rebuild.py"
    if not script.exists():
        return {"events": events, "skipped": "this checkout has no bench/rebuild.py (projector rebuild)"}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), "--events", str(events), env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    t0 = time.perf_counter()
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.send_signal(signal.SIGINT)  # its own clean-up (vhost, databases) runs on the way out
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except asyncio.TimeoutError:
            proc.kill()
        return {"events": events, "error": f"did not finish within {timeout:.0f} s "
                                           f"(under {events / timeout:,.0f} events/s)"}
    text = out.decode(errors="replace")
    replay = re.search(r"^replay: .* = ([\d,]+) events/s", text, re.M)
    whole = re.search(r"^whole rebuild.* = ([\d,]+) events/s", text, re.M)
    if proc.returncode != 0 or whole is None:
        return {"events": events, "error": f"bench/rebuild.py exit {proc.returncode}: {text.strip()[-400:]}"}
    rate = float(whole.group(1).replace(",", ""))
    return {"events": events, "seconds": time.perf_counter() - t0, "events_per_s": rate,
            "replay_events_per_s": float(replay.group(1).replace(",", "")) if replay else None}


async def catch_up(client: RpcClient, position: int, timeout: float) -> float | None:
    """Waits until the views reach `position` (so that a phase does not start with the
    previous phase's backlog still being applied); the seconds it took, None if not within
    `timeout`."""
    t0 = time.perf_counter()
    with console.status(f"waiting for the projector to reach position {position:,}"):
        while time.perf_counter() - t0 < timeout:
            try:
                q = await client.query({"queryType": "GetOrderDetails", "minPosition": position, "maxWaitMs": 10000,
                                        "parameters": {"orderId": "none"}}, timeout=30)
            except RpcTimeout:  # the query service is still busy with the previous phase's queries
                continue
            if q["status"] == "ok" or q["error"]["code"] != "stale":
                return time.perf_counter() - t0
    console.print(f"[yellow]the projector did not reach position {position:,} within {timeout:.0f} s[/]")
    return None


async def current_position(client: RpcClient, run: str) -> int:
    """The newest position: that of a command accepted now (RegisterCustomer of a new id)."""
    r = await client.send_command({"commandType": "RegisterCustomer", **ADMIN, "data": {
        "customerId": f"probe-{uuid.uuid4().hex[:8]}-{run}", "name": "Probe", "email": "probe@example.com",
        "creditLimit": "1"}}, timeout=60)
    return r["position"]


# ---- report -----------------------------------------------------------------------------

def _cpu(m: dict, service: str) -> float:
    return m.get("service_cpu_ms_per_request", {}).get(service, float("nan"))


def goals(r: dict) -> list[tuple[str, str, str, bool, str]]:
    """(goal, measured, ratio, met, why it misses: from this run's figures)."""
    out = []
    base = r["baseline"]
    echo64 = base["echo_64"]["throughput"]
    missing = "not measured (phase not run)"
    if "place_order" not in r:
        out += [("PlaceOrder c=64 >= 50% of echo c=64", missing, "-", False, missing),
                ("PlaceOrder c=64 >= 2x nameko echo c=64", missing, "-", False, missing),
                ("PlaceOrder p50 c=1 <= 3 ms", missing, "-", False, missing)]
    else:
        out += _place_order_goals(r, base, echo64)
    if "lag" not in r:
        out.append(("lag p99 <= 50 ms at 200 commands/s", missing, "-", False, missing))
    else:
        out.append(_lag_goal(r))
    if "query" not in r:
        out.append(("query c=64 >= 70% of echo c=64", missing, "-", False, missing))
    else:
        out.append(_query_goal(r, echo64))
    out += _rebuild_and_memory_goals(r)
    return out


def _cores() -> int:
    return os.cpu_count() or 1


def _ceiling_why(m: dict, what: str, target: float) -> str:
    """Why a throughput misses, from the phase's CPU: what every process spent per request,
    and the rate the machine's cores allow at that cost, against the rate the goal needs."""
    ceiling = cpu_ceiling(m)
    verdict = (f"below the {target:,.0f}/s the goal needs: the goal is out of reach on {_cores()} cores "
               f"unless the work per {what} shrinks to {1000 * _cores() / target:.2f} ms"
               if ceiling < target else
               f"above the {target:,.0f}/s the goal needs, so CPU is not the only limit here (waits, locks)")
    return (f"all processes together spent {cpu_sum(m):.2f} ms CPU per {what} ({cpu_parts(m)}); {_cores()} cores "
            f"allow at most {ceiling:,.0f}/s at that cost, {verdict}")


def _place_order_goals(r: dict, base: dict, echo64: float) -> list:
    out = []
    po = r["place_order"]["64"]
    po64 = po["throughput"]
    target = max(0.5 * echo64, 2 * ISSUE["nameko_echo_64"])
    echo_cost = cpu_sum(base["echo_64"])
    why_po = (_ceiling_why(po, "command", target) +
              (f"; the echo itself costs {echo_cost:.2f} ms per round trip" if echo_cost == echo_cost and echo_cost else ""))
    out.append(("PlaceOrder c=64 >= 50% of echo c=64",
                f"{po64:,.0f}/s vs {echo64:,.0f}/s (vs the issue's {ISSUE['echo_64']:,}/s: {po64 / ISSUE['echo_64']:.0%})",
                f"{po64 / echo64:.0%}",
                po64 >= 0.5 * echo64, why_po))
    nameko = ISSUE["nameko_echo_64"]
    out.append((f"PlaceOrder c=64 >= 2x nameko echo c=64 ({nameko}/s, issue #7's figure)", f"{po64:,.0f}/s",
                f"{po64 / nameko:.2f}x", po64 >= 2 * nameko, why_po))
    p1 = r["place_order"]["1"]
    p50 = p1["p50_ms"]
    out.append(("PlaceOrder p50 c=1 <= 3 ms", f"{p50:.2f} ms", f"{p50 / 3:.2f}x of goal", p50 <= 3,
                f"the echo alone takes {base['echo_1']['p50_ms']:.2f} ms at c=1 here; one command costs "
                f"{cpu_sum(p1):.2f} ms CPU in all ({cpu_parts(p1)}), and at c=1 the relay's and the projector's "
                f"work for the previous command overlaps with it; the command path makes "
                f"{COMMAND_ROUND_TRIPS} PostgreSQL round trips"))
    return out


def _lag_goal(r: dict) -> tuple:
    lag = r["lag"]
    answered = lag.get("answered_per_s", float("nan"))
    ceiling = cpu_ceiling(lag)
    cause = (f"each command with its read-your-writes query cost {cpu_sum(lag):.2f} ms CPU in all ({cpu_parts(lag)}): "
             f"{_cores()} cores allow at most {ceiling:,.0f} such pairs/s, so at {lag['rate']:.0f}/s the machine runs at "
             f"{lag['rate'] / ceiling:.0%} of its capacity and every stage (command, relay, projector, query) queues for a "
             f"core; the command side answered {answered:,.0f}/s")
    if lag["rate"] != 200:
        return ("lag p99 <= 50 ms at 200 commands/s", f"{lag['p99_ms']:,.1f} ms at {lag['rate']:g}/s", "-", False,
                f"measured at {lag['rate']:g} commands/s (--lag-rate), not the goal's 200")
    return ("lag p99 <= 50 ms at 200 commands/s", f"{lag['p99_ms']:,.1f} ms", f"{lag['p99_ms'] / 50:.2f}x of goal",
            lag["p99_ms"] <= 50,
            f"{cause}; {lag['commands']:,} commands offered, {lag['failures']:,} timed out")


def _query_goal(r: dict, echo64: float) -> tuple:
    q = r["query"]["64"]
    q64 = q["throughput"]
    echo_cost = cpu_sum(r["baseline"]["echo_64"])
    return (("query c=64 >= 70% of echo c=64",
             f"{q64:,.0f}/s vs {echo64:,.0f}/s (vs the issue's {ISSUE['echo_64']:,}/s: {q64 / ISSUE['echo_64']:.0%})",
             f"{q64 / echo64:.0%}",
             q64 >= 0.7 * echo64,
             _ceiling_why(q, "query", 0.7 * echo64) +
             (f"; the echo costs {echo_cost:.2f} ms per round trip, the query adds the query service's work (parse, "
              f"validate, one MongoDB find_one through motor's thread pool, reply) and the MongoDB server's"
              if echo_cost == echo_cost and echo_cost else "")))


def _rebuild_and_memory_goals(r: dict) -> list:
    out = []
    rb = r.get("rebuild", {})
    rate = rb.get("events_per_s")
    out.append((f"rebuild >= 5,000 events/s ({HISTORY_EVENTS:,} events)",
                f"{rate:,.0f} events/s" if rate else rb.get("skipped") or rb.get("error") or "not measured",
                f"{rate / 5000:.2f}x" if rate else "-", bool(rate and rate >= 5000),
                (f"replay alone {rb.get('replay_events_per_s') or 0:,.0f} events/s; the nx-27017 stand-in applies bulk "
                 f"writes one document at a time, and the rebuild, RabbitMQ, the command service serving the replay "
                 f"and the stand-in share the 2 cores (docs/performance.md, Rebuild)") if rate
                else (rb.get("skipped") or rb.get("error") or "not measured")))
    idle = max(r["rss_mb"]["idle"].values())
    out.append(("idle RSS <= 100 MB per service", f"max {idle:.0f} MB", f"{idle / 100:.2f}x of goal", idle <= 100,
                "the largest service process"))
    return out


def report(r: dict) -> None:
    t = Table(title="Measurements (each with its baseline)")
    for col in ("what", "throughput/s", "p50 ms", "p95 ms", "p99 ms", "baseline", "ratio", "svc CPU ms/req", "load"):
        t.add_column(col, justify="right" if col != "what" else "left")
    base = r["baseline"]

    def row(name, m, b=None, base_name="", service=None):
        ratio = f"{m['throughput'] / b['throughput']:.0%}" if b else ""
        cpu = f"{_cpu(m, service):.2f}" if service else ""
        t.add_row(name, f"{m['throughput']:,.0f}", f"{m['p50_ms']:.2f}", f"{m['p95_ms']:.2f}", f"{m['p99_ms']:.2f}",
                  base_name, ratio, cpu, f"{m.get('loadavg_1m', float('nan')):.1f}")

    for key, name in (("echo_1", "echo RPC c=1 (aio-pika)"), ("echo_64", "echo RPC c=64 (aio-pika)"),
                      ("pg_tx_64", "asyncpg 3-row tx c=64"), ("mongo_find_32", "motor find_one c=32")):
        row(name, base[key], {"throughput": ISSUE[key]}, "issue's figure")
    for c in ("1", "16", "64") if "place_order" in r else ():
        row(f"PlaceOrder c={c}", r["place_order"][c], base["echo_1" if c == "1" else "echo_64"],
            "echo c=1" if c == "1" else "echo c=64", "command-service")
    if "query" in r:
        row("GetOrderDetails c=1", r["query"]["1"], base["echo_1"], "echo c=1", "query-service")
        row("GetOrderDetails c=64", r["query"]["64"], base["echo_64"], "echo c=64", "query-service")
    console.print(t)
    lag = r.get("lag")
    if lag:
        console.print(f"command -> view lag at {lag['rate']:.0f}/s: p50 {lag['p50_ms']:.1f} ms, p95 {lag['p95_ms']:.1f} ms, "
                      f"p99 {lag['p99_ms']:.1f} ms ({lag['failures']} failures); projector CPU "
                      f"{_cpu(lag, 'projector-service'):.2f} ms per command")
    cpu_table(r)
    cu = r.get("catch_up_s", {})
    console.print("projector catch-up before the next phase: " + ", ".join(
        f"{k.replace('_', ' ')} {'%.1f s' % v if v is not None else 'not within the timeout'}" for k, v in cu.items()))
    rb = r.get("rebuild", {})
    if rb.get("events_per_s"):
        console.print(f"rebuild of {rb['events']:,} events: {rb['events_per_s']:,.0f} events/s for the whole rebuild "
                      f"(replay alone {rb.get('replay_events_per_s') or float('nan'):,.0f} events/s)")
    m = Table(title="Memory (RSS, MB)")
    m.add_column("service")
    m.add_column("idle", justify="right")
    m.add_column("loaded", justify="right")
    for name in r["rss_mb"]["idle"]:
        m.add_row(name, f"{r['rss_mb']['idle'][name]:.0f}", f"{r['rss_mb']['loaded'][name]:.0f}")
    console.print(m)
    echo64 = r["baseline"]["echo_64"]["throughput"]
    console.print(f"machine: {r['machine']['cpus']} cores; this run's baselines reached {echo64 / ISSUE['echo_64']:.0%} "
                  f"(echo c=64), {r['baseline']['pg_tx_64']['throughput'] / ISSUE['pg_tx_64']:.0%} (asyncpg) and "
                  f"{r['baseline']['mongo_find_32']['throughput'] / ISSUE['mongo_find_32']:.0%} (motor) of the issue's "
                  f"quiet-machine figures: the lower, the busier the machine was with other work")
    g = Table(title="Goals", show_lines=True)
    for col in ("goal", "measured", "ratio", "met", "why it misses"):
        g.add_column(col)
    for name, measured, ratio, met, why in goals(r):
        g.add_row(name, measured, ratio, "[green]yes[/]" if met else "[red]no[/]", "" if met else why)
    console.print(g)


CPU_COLUMNS = ("command-service", "projector-service", "query-service", "rabbitmq", "postgresql", "mongodb",
               "bench client")


def cpu_sum(m: dict) -> float:
    """CPU ms per request of every process involved, the bench client included."""
    cpu = m.get("service_cpu_ms_per_request", {})
    return sum(cpu.get(k, 0.0) for k in CPU_COLUMNS)


def cpu_ceiling(m: dict) -> float:
    """The rate this machine's cores allow at that CPU per request, if nothing else ran."""
    total = cpu_sum(m)
    return 1000 * (os.cpu_count() or 1) / total if total > 0 else float("nan")


def cpu_parts(m: dict) -> str:
    cpu = m.get("service_cpu_ms_per_request", {})
    parts = sorted(((cpu.get(k, 0.0), k) for k in CPU_COLUMNS), reverse=True)
    return ", ".join(f"{k} {v:.2f}" for v, k in parts if v >= 0.05)


def cpu_table(r: dict) -> None:
    """Where the cores went in each phase: CPU ms per request of each process (the bench
    client, which generates the load, included), their sum, and the rate that sum allows on
    this machine's cores if nothing else ran."""
    t = Table(title="CPU per request (ms, user + system) by process")
    for col in ("phase", *CPU_COLUMNS, "sum", f"ceiling on {os.cpu_count()} cores"):
        t.add_column(col, justify="left" if col == "phase" else "right")
    phases = [(name, r["baseline"][key]) for key, name in (("echo_1", "echo c=1 (client + echo server)"),
                                                           ("echo_64", "echo c=64 (client + echo server)"))
              if key in r["baseline"]]
    phases += [(f"PlaceOrder c={c}", r["place_order"][c]) for c in ("1", "16", "64") if "place_order" in r]
    phases += [(f"lag at {r['lag']['rate']:g}/s", r["lag"])] if "lag" in r else []
    phases += [(f"GetOrderDetails c={c}", r["query"][c]) for c in ("1", "64") if "query" in r]
    for name, m in phases:
        cpu = m.get("service_cpu_ms_per_request", {})
        t.add_row(name, *(f"{cpu.get(k, float('nan')):.2f}" for k in CPU_COLUMNS), f"{cpu_sum(m):.2f}",
                  f"{cpu_ceiling(m):,.0f}/s")
    console.print(t)


def chart(r: dict, path: Path) -> None:
    if not all(k in r for k in ("place_order", "query", "lag")):
        return  # the chart compares all load phases; a partial run writes only the JSON
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
    lat_names = ["PlaceOrder c=1", "PlaceOrder c=64", "Query c=1", "Query c=64", f"lag @{r['lag']['rate']:g}/s"]
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
    RESULTS.mkdir(parents=True, exist_ok=True)
    s = args.seconds
    phases = set(args.phases.split(","))
    unknown = phases - set(PHASES)
    if unknown:
        console.print(f"[red]unknown phase(s) {', '.join(sorted(unknown))}; known: {', '.join(PHASES)}[/]")
        return 2

    def prof(name: str) -> tuple[str, str] | None:
        return (name, args.profile) if args.profile else None

    async with isolated("bench") as iso:
        run, vhost_url, dsn, mongo, mongo_db = iso.run, iso.amqp_url, iso.dsn, iso.mongo_url, iso.mongo_db
        r: dict = {"run": iso.run, "seconds_per_phase": s, "machine": {"cpus": os.cpu_count()}, "baseline": {}}
        services = Services({**os.environ, "AMQP_URL": vhost_url, "POSTGRES_DSN": dsn, "MONGO_URL": mongo,
                             "MONGO_DB": mongo_db, "PG_POOL_MAX": "16", "HEALTH_PORT": "0"}, RESULTS)
        try:
            with console.status("baselines") as st:
                mongo_pid = listening_pid(mongo)
                st.update("baseline: aio-pika echo RPC c=1")
                r["baseline"]["echo_1"] = await with_cpu(echo_baseline(vhost_url, 1, s))
                st.update("baseline: aio-pika echo RPC c=64")
                r["baseline"]["echo_64"] = await with_cpu(echo_baseline(vhost_url, 64, s))
                st.update("baseline: asyncpg 3-row transaction c=64")
                r["baseline"]["pg_tx_64"] = await with_cpu(pg_baseline(dsn, 64, s))
                st.update("baseline: motor find_one c=32")
                r["baseline"]["mongo_find_32"] = await with_cpu(mongo_baseline(mongo, mongo_db, 32, s), mongo_pid)
            console.print("baselines done")
            services.start()
            await asyncio.sleep(2)
            r["rss_mb"] = {"idle": services.rss_mb()}
            loaded = {k: 0.0 for k in r["rss_mb"]["idle"]}

            async def sample() -> None:
                while True:
                    try:
                        for k, v in services.rss_mb().items():
                            loaded[k] = max(loaded[k], v)
                    except psutil.NoSuchProcess:
                        return
                    await asyncio.sleep(0.5)

            sampler = asyncio.create_task(sample())
            client = await RpcClient.connect(vhost_url)
            customers, products = 200, 50
            with console.status("seeding customers and products"):
                await seed(client, run, customers, products)
            last = await client.send_command(place_order(run, 0, 0, customers, products))
            r["catch_up_s"] = {}
            if "place_order" in phases:
                r["place_order"] = {}
                for c in (1, 16, 64):
                    with console.status(f"PlaceOrder at concurrency {c} for {s:.0f} s"):
                        async def po(n, i, c=c):
                            return (await client.send_command(place_order(run, n + c * 1000, i, customers, products)))["status"] == "accepted"
                        r["place_order"][str(c)] = await measured(services, load(po, c, s), prof(f"place_order_c{c}"), s)
                    console.print(f"PlaceOrder c={c}: {r['place_order'][str(c)]['throughput']:,.0f}/s")
                r["catch_up_s"]["after_place_order"] = await catch_up(client, await current_position(client, run),
                                                                      args.catch_up_timeout)
            if "lag" in phases:
                with console.status(f"lag at {args.lag_rate:g} commands/s for {s:.0f} s"):
                    r["lag"] = await measured(services, lag_phase(client, run, args.lag_rate, s, customers, products),
                                              prof("lag"), s)
                console.print(f"lag p99: {r['lag']['p99_ms']:,.1f} ms")
                r["catch_up_s"]["after_lag"] = await catch_up(client, await current_position(client, run),
                                                              args.catch_up_timeout)
            if "query" in phases:
                await catch_up(client, last["position"], args.catch_up_timeout)
                r["query"] = {}
                for c in (1, 64):
                    with console.status(f"GetOrderDetails at concurrency {c} for {s:.0f} s"):
                        async def q(n, i):
                            return (await client.query({"queryType": "GetOrderDetails",
                                                        "parameters": {"orderId": last["aggregateId"]}}))["status"] == "ok"
                        r["query"][str(c)] = await measured(services, load(q, c, s), prof(f"query_c{c}"), s)
                    console.print(f"GetOrderDetails c={c}: {r['query'][str(c)]['throughput']:,.0f}/s")
            sampler.cancel()
            r["rss_mb"]["loaded"] = loaded
            await client.close()
        finally:
            services.stop()
    if "rebuild" in phases:
        with console.status(f"rebuild of {HISTORY_EVENTS:,} events (bench/rebuild.py)"):
            r["rebuild"] = await rebuild_phase({**os.environ, "MONGO_URL": mongo}, HISTORY_EVENTS, args.rebuild_timeout)
    r["goals"] = [{"goal": g, "measured": m_, "ratio": ra, "met": ok, "why": why} for g, m_, ra, ok, why in goals(r)]
    (RESULTS / "results.json").write_text(json.dumps(r, indent=2))
    chart(r, RESULTS / "chart.png")
    report(r)
    console.print(f"written {RESULTS / 'results.json'} and {RESULTS / 'chart.png'}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each phase")
    ap.add_argument("--catch-up-timeout", type=float, default=120.0,
                    help="longest wait for the projector to apply a phase's events before the next phase")
    ap.add_argument("--lag-rate", type=float, default=200.0,
                    help="commands/s of the lag phase (the goal is judged at 200; a lower rate shows the lag of an idle path)")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help=f"comma-separated phases to run (default all: {','.join(PHASES)}); the baselines always run")
    ap.add_argument("--profile", nargs="?", const="flamegraph", choices=("flamegraph", "raw", "speedscope"),
                    help="sample each service with py-spy during every load phase: bench/results/profile-<phase>-<service>.svg "
                         "(raw: collapsed stacks, .txt)")
    ap.add_argument("--rebuild-timeout", type=float, default=300.0, help="longest wait for the rebuild phase")
    sys.exit(asyncio.run(main(ap.parse_args())))
