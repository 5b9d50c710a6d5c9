"""`make scale`: per-service scaling, shown locally with processes.

1. Two command-service replicas take a seeded random workload of all eight commands
   (tests/oracle/workload.py); the events table is checked: every accepted command applied
   exactly once.
2. The same history (every stored event, replayed from position 1 over `cqrs.internal`) is
   projected by the projector at 1, 2 and 4 replicas, each time into a fresh MongoDB
   database: events/s projected and time to catch up; then one query service on that
   database answers every query the oracle (tests/oracle/model.py) can state: views exact
   yes/no.
3. Query replicas: the same query load (GetOrderDetails, ListCustomerOrders, summaries) at
   1 and 2 query-service replicas: answers/s and how many each replica answered (from the
   `instance` field of their JSON logs).

Runs on its own vhost, PostgreSQL database and MongoDB databases, removed afterwards.
Prints a table and writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import asyncpg
from motor.motor_asyncio import AsyncIOMotorClient
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from cqrs_shared.messaging.rpc import RpcClient  # noqa: E402
from isolation import isolated  # noqa: E402
from oracle.compare import check_events, compare_all, event_rows, event_times  # noqa: E402
from oracle.faults import rabbitmqctl, request_replay  # noqa: E402
from oracle.model import Model  # noqa: E402
from oracle.workload import Workload, check_replies, figures, run_workload  # noqa: E402
from procs import Service  # noqa: E402

RESULTS = ROOT / "bench" / "results"
console = Console(width=120)


async def watermark(mongo: AsyncIOMotorClient, db: str) -> int:
    doc = await mongo[db]["projector_state"].find_one({"_id": "watermark"})
    return int(doc["position"]) if doc and doc.get("position") is not None else 0


async def projector_phase(n: int, env: dict, logdir: Path, vhost_url: str, mongo: AsyncIOMotorClient,
                          db: str, last: int, model: Model, records: list, timeout: float) -> dict:
    """n replicas project the whole history into `db`; then the oracle checks the views."""
    penv = {**env, "MONGO_DB": db, "CATCH_UP_ON_START": "false"}
    replicas = [Service("projector-service", {**penv, "INSTANCE": f"p{n}-{i}"}, logdir, f"projector-{n}x-{i}").start()
                for i in range(n)]
    try:
        t0 = time.perf_counter()
        await request_replay(vhost_url, 1)
        deadline = time.monotonic() + timeout
        while (w := await watermark(mongo, db)) < last and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - t0
    finally:
        for r in replicas:
            r.terminate()
    # an event whose predecessor (same aggregate) is still with another replica is retried
    retries = sum(path.read_text(errors="replace").count("OutOfOrder")
                  for path in logdir.glob(f"projector-{n}x-*.log"))
    row = {"replicas": n, "events": last, "caught_up": w >= last, "seconds": round(elapsed, 2),
           "events_per_s": round(last / elapsed, 1), "out_of_order_retries": retries}
    query = Service("query-service", {**env, "MONGO_DB": db, "INSTANCE": f"q-check-{n}"}, logdir, f"query-check-{n}").start()
    client = await RpcClient.connect(vhost_url)
    try:
        cmp = await compare_all(client.query, model, seed=n, searches=40, records=records)
    finally:
        await client.close()
        query.terminate()
    row.update(queries_compared=cmp.total, mismatches=len(cmp.mismatches), views_exact=not cmp.mismatches)
    if cmp.mismatches:
        console.print(f"[red]{len(cmp.mismatches)} mismatches at {n} replicas[/red], first:\n{cmp.mismatches[0]}")
    return row


async def query_phase(n: int, env: dict, logdir: Path, vhost_url: str, model: Model, seconds: float,
                      concurrency: int) -> dict:
    replicas = [Service("query-service", {**env, "INSTANCE": f"q{n}-{i}"}, logdir, f"query-{n}x-{i}").start()
                for i in range(n)]
    orders, customers = sorted(model.orders), sorted(model.customers)
    client = await RpcClient.connect(vhost_url)
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < stop:
            i += concurrency
            if i % 3 == 0:
                q = {"queryType": "ListCustomerOrders", "parameters": {"customerId": customers[i % len(customers)]}}
            elif i % 3 == 1 or not orders:  # a tiny workload may have accepted no order
                q = {"queryType": "GetCustomerSummary", "parameters": {"customerId": customers[i % len(customers)]}}
            else:
                q = {"queryType": "GetOrderDetails", "parameters": {"orderId": orders[i % len(orders)]}}
            r = await client.query(q)
            assert r["status"] == "ok", r
            done += 1

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - t0
    finally:
        await client.close()
        for r in replicas:
            r.terminate()
    per = Counter()
    for path in logdir.glob(f"query-{n}x-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"query ok"' in line:
                per[json.loads(line)["instance"]] += 1
    return {"replicas": n, "queries": done, "seconds": round(elapsed, 2), "queries_per_s": round(done / elapsed, 1),
            "answers_per_replica": dict(sorted(per.items()))}


async def main(args: argparse.Namespace) -> int:
    replica_counts = [int(x) for x in args.replicas.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    async with isolated("scale") as iso:
        run, vhost, vhost_url, dsn, mongo_url = iso.run, iso.vhost, iso.amqp_url, iso.dsn, iso.mongo_url
        dbs = {n: iso.mongo_database(str(n)) for n in replica_counts}
        logdir = Path(tempfile.mkdtemp(prefix="scale-logs-"))
        env = {**os.environ, "AMQP_URL": vhost_url, "POSTGRES_DSN": dsn, "MONGO_URL": mongo_url,
               "MONGO_DB": dbs[replica_counts[-1]], "HEALTH_PORT": "0", "RELAY_POLL_SECONDS": "0.2"}
        mongo = AsyncIOMotorClient(mongo_url)
        out: dict = {"run": run, "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
                     "mongo": mongo_url, "commands": args.commands}
        commands = [Service("command-service", {**env, "INSTANCE": f"c-{i}"}, logdir, f"command-{i}") for i in range(2)]
        try:
            for c in commands:
                c.start()
            client = await RpcClient.connect(vhost_url)
            with console.status(f"{args.commands} commands through 2 command-service replicas"):
                t0 = time.perf_counter()
                records = await run_workload(client, Workload(args.seed), args.commands)
                sent_s = time.perf_counter() - t0
            await client.close()
            rows = await event_rows(dsn)
            problems = check_replies(records) + check_events(records, rows)
            model = Model.build(records, event_times(rows))
            fig = figures(records)["total"]
            out["command_service"] = {"replicas": 2, "commands": len(records), "accepted": fig.get("accepted", 0),
                                      "rejected": fig.get("rejected", 0), "seconds": round(sent_s, 2),
                                      "commands_per_s": round(len(records) / sent_s, 1), "events": len(rows),
                                      "applied_twice_or_lost": len(problems) + len(model.violations)}
            console.print(f"command service x2: {len(records)} commands in {sent_s:.1f} s, {len(rows)} events, "
                          f"problems {len(problems) + len(model.violations)}")
            for p_ in (problems + model.violations)[:5]:
                console.print(f"  [red]{p_}[/red]")
            # the relay published the history once already: only the replays below count
            conn = await asyncpg.connect(dsn)
            try:
                while await conn.fetchval("SELECT count(*) FROM events WHERE published_at IS NULL"):
                    await asyncio.sleep(0.2)
            finally:
                await conn.close()
            rabbitmqctl("purge_queue", "-p", vhost, "projector-service.events")
            last = rows[-1]["position"]
            out["projector"] = []
            for n in replica_counts:
                with console.status(f"projector x{n}: {last} events, then the oracle"):
                    row = await projector_phase(n, env, logdir, vhost_url, mongo, dbs[n], last, model, records, args.timeout)
                out["projector"].append(row)
                console.print(f"projector x{n}: {row['events_per_s']} events/s, exact: {row['views_exact']}")
            out["query"] = []
            for n in (1, 2):
                with console.status(f"query-service x{n} for {args.query_seconds:.0f} s"):
                    out["query"].append(await query_phase(n, env, logdir, vhost_url, model, args.query_seconds, 32))
        finally:
            for c in commands:
                c.terminate()
            mongo.close()
    (RESULTS / "scale.json").write_text(json.dumps(out, indent=2))
    report(out)
    console.print(f"written {RESULTS / 'scale.json'} (logs in {logdir})")
    ok = (out["command_service"]["applied_twice_or_lost"] == 0 and all(r["views_exact"] and r["caught_up"]
                                                                       for r in out["projector"]))
    return 0 if ok else 1


def report(out: dict) -> None:
    cs = out["command_service"]
    t = Table(title=f"projector replicas, same history of {out['projector'][0]['events']} events "
                    f"(command service x2: {cs['commands']} commands, {cs['commands_per_s']}/s, "
                    f"applied twice or lost: {cs['applied_twice_or_lost']})")
    for col in ("replicas", "events/s projected", "time to catch up", "out-of-order retries", "queries compared",
                "views exact"):
        t.add_column(col, justify="right")
    for r in out["projector"]:
        t.add_row(str(r["replicas"]), f"{r['events_per_s']:,.0f}", f"{r['seconds']:.1f} s",
                  str(r["out_of_order_retries"]), str(r["queries_compared"]),
                  "yes" if r["views_exact"] and r["caught_up"] else "NO")
    console.print(t)
    q = Table(title="query-service replicas, same query load (concurrency 32)")
    for col in ("replicas", "queries/s", "answers per replica"):
        q.add_column(col, justify="right")
    for r in out["query"]:
        q.add_row(str(r["replicas"]), f"{r['queries_per_s']:,.0f}",
                  ", ".join(f"{k}: {v}" for k, v in r["answers_per_replica"].items()))
    console.print(q)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commands", type=int, default=1000)
    ap.add_argument("--replicas", default="1,2,4", help="projector replica counts")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--query-seconds", type=float, default=8.0)
    ap.add_argument("--timeout", type=float, default=300.0, help="max seconds for one catch-up")
    sys.exit(asyncio.run(main(ap.parse_args())))
