"""Per-service scaling, as processes: two replicas of each service on one vhost.

- Two command-service replicas never apply a command twice: every command of a random
  workload is sent twice at once (same commandId, so the broker hands the copies to both
  replicas), and one replica is killed (kill -9) mid-run and restarted, so what it held is
  redelivered to the other. Each accepted command has exactly one event in the events table,
  and both copies got the same reply.
- The projector at two replicas keeps the views exact: every query answer equals the oracle
  (tests/oracle).
- Query replicas share the load: each replica's JSON log names its `instance` on every
  answer, and each answered a fair share of the comparison's queries.

`make scale` measures the projector at 1, 2 and 4 replicas (bench/scale.py); this test
only proves correctness, never speed.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter, defaultdict

import pytest

from cqrs_shared.messaging.rpc import RpcClient, RpcTimeout
from oracle.compare import check_events, compare_all, event_rows, event_times
from oracle.faults import vhost_of, wait_drained
from oracle.model import Model
from oracle.workload import Progress, Workload, check_replies, figures, format_figures, run_workload
from procs import Service

pytestmark = pytest.mark.e2e

SEED = 4242
COMMANDS = int(os.environ.get("SCALING_COMMANDS", "400"))


@pytest.fixture(scope="module")
def stack(rabbit_vhost_url, pg_dsn, mongo_url, mongo_db_name, tmp_path_factory):
    env = {**os.environ, "AMQP_URL": rabbit_vhost_url, "POSTGRES_DSN": pg_dsn, "MONGO_URL": mongo_url,
           "MONGO_DB": mongo_db_name, "RELAY_POLL_SECONDS": "0.2", "PREFETCH": "16"}
    logdir = tmp_path_factory.mktemp("scaling-logs")
    svc = {}
    for name, short in (("command-service", "command"), ("projector-service", "projector"), ("query-service", "query")):
        svc[short] = [Service(name, {**env, "INSTANCE": f"{short}-{i}"}, logdir, f"{short}-{i}").start()
                      for i in range(2)]
    yield svc, logdir
    for group in ("query", "projector", "command"):
        for s in svc[group]:
            s.terminate()


def _log_lines(logdir, prefix: str):
    for path in sorted(logdir.glob(f"{prefix}-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


async def test_two_replicas_of_each_service(stack, rabbit_vhost_url, pg_dsn):
    svc, logdir = stack
    client = await RpcClient.connect(rabbit_vhost_url)
    different: list[tuple] = []

    async def send_twice(cmd):
        a, b = await asyncio.gather(client.send_command(cmd, timeout=20), client.send_command(cmd, timeout=20),
                                    return_exceptions=True)
        replies = [r for r in (a, b) if isinstance(r, dict)]
        if not replies:
            raise RpcTimeout("no reply to either copy")
        if len(replies) == 2 and a != b:
            different.append((cmd["commandId"], a, b))
        return replies[0]

    progress = Progress(COMMANDS)

    async def kill_one_command_replica() -> None:
        await progress.reached(0.5).wait()
        victim = svc["command"][1]
        victim.kill9()
        await asyncio.sleep(0.3)
        await asyncio.to_thread(victim.start)

    try:
        killer = asyncio.create_task(kill_one_command_replica())
        records = await run_workload(client, Workload(SEED, customers=40, products=15), COMMANDS,
                                     progress=progress, send=send_twice)
        await killer
        rows = await event_rows(pg_dsn)
        model = Model.build(records, event_times(rows))
        drained = await asyncio.to_thread(wait_drained, vhost_of(rabbit_vhost_url), 120.0)
        comparison = await compare_all(client.query, model, seed=SEED, searches=60, records=records)
    finally:
        await client.close()

    # which command-service instance handled each commandId (a log line per outcome)
    handled_by: dict[str, set[str]] = defaultdict(set)
    for line in _log_lines(logdir, "command"):
        if line.get("commandId") and str(line.get("message", "")).startswith("command "):
            handled_by[line["commandId"]].add(line["instance"])
    both = sum(1 for s in records if len(handled_by.get(s.command["commandId"], ())) == 2)
    answers = Counter(line["instance"] for line in _log_lines(logdir, "query")
                      if str(line.get("message", "")).startswith("query "))
    print(f"\n{format_figures(figures(records))}\ncommands handled by both replicas: {both}; "
          f"events {len(rows)}; queries compared {comparison.total}; answers per query replica {dict(answers)}")

    assert not check_replies(records), check_replies(records)[:10]
    assert not different, different[:5]
    assert not check_events(records, rows), check_events(records, rows)[:10]  # each accepted command once
    assert both > COMMANDS // 4, "the copies did not reach both replicas"
    assert not model.violations, model.violations[:10]
    assert not drained["busy"] and drained["dlq"] == 0, drained
    assert not comparison.mismatches, "\n".join(comparison.mismatches[:5])
    assert set(answers) == {"query-0", "query-1"}
    assert min(answers.values()) >= 0.2 * comparison.total, answers
