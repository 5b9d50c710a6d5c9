"""cqrsctl and the plain-pika example as subprocesses against the three services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from procs import BIN, Service

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "pika_order_example.py"


@pytest.fixture(scope="module")
def env(rabbit_vhost_url, pg_dsn, mongo_url, mongo_db_name, tmp_path_factory):
    env = {**os.environ, "AMQP_URL": rabbit_vhost_url, "POSTGRES_DSN": pg_dsn, "MONGO_URL": mongo_url,
           "MONGO_DB": mongo_db_name, "RELAY_POLL_SECONDS": "0.2"}
    logdir = tmp_path_factory.mktemp("cli-logs")
    svc = [Service(n, env, logdir).start() for n in ("command-service", "projector-service", "query-service")]
    yield env
    for s in svc:
        s.terminate()


def cqrsctl(env, *args, timeout=60):
    return subprocess.run([str(BIN / "cqrsctl"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_command_query_and_errors(env, tmp_path):
    run = uuid.uuid4().hex[:8]
    r = cqrsctl(env, "command", "AddProduct", "--data", json.dumps(
        {"productId": f"p-{run}", "name": "Lamp", "price": "9.99", "stock": 5}), "--user-id", "admin", "--role", "admin", "--json")
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    assert added["status"] == "accepted" and added["aggregateId"] == f"p-{run}"

    r = cqrsctl(env, "command", "RegisterCustomer", "--data", json.dumps(
        {"customerId": f"c-{run}", "name": "Lin", "email": "lin@example.com", "creditLimit": "100"}),
        "-u", "admin", "-r", "admin", "--json")
    assert r.returncode == 0, r.stderr
    data_file = tmp_path / "order.json"
    data_file.write_text(json.dumps({"orderId": f"o-{run}", "customerId": f"c-{run}",
                                     "items": [{"productId": f"p-{run}", "quantity": 2}],
                                     "shippingAddress": {"street": "1 A St", "city": "B", "state": "C", "zip": "1"}}))
    r = cqrsctl(env, "command", "PlaceOrder", "--data", f"@{data_file}", "-u", f"c-{run}", "-r", "customer", "--json")
    assert r.returncode == 0, r.stderr
    placed = json.loads(r.stdout)

    r = cqrsctl(env, "query", "GetOrderDetails", "--param", f"orderId=o-{run}", "--param", "includeHistory=true",
                "--min-position", str(placed["position"]), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    reply = json.loads(r.stdout)
    assert reply["position"] >= placed["position"]
    assert reply["result"]["totalAmount"] == "19.98" and len(reply["result"]["history"]) == 1

    # human output, and a rejection: exit 1 with the code on stderr
    r = cqrsctl(env, "query", "GetOrderDetails", "-p", f"orderId=o-{run}")
    assert r.returncode == 0 and "Lamp" in r.stdout
    r = cqrsctl(env, "query", "GetOrderDetails", "-p", f"orderId=missing-{run}")
    assert r.returncode == 1 and "not_found" in r.stderr
    r = cqrsctl(env, "command", "AddProduct", "--data", json.dumps(
        {"productId": f"p-{run}", "name": "Lamp", "price": "9.99", "stock": 5}), "-u", "admin", "-r", "admin")
    assert r.returncode == 1 and "duplicate" in r.stderr and "Traceback" not in r.stderr
    r = cqrsctl(env, "command", "AddProduct", "--data", '{"name": "x", "price": 2.5, "stock": 1}',
                "-u", "admin", "-r", "admin", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["details"][0]["field"] == "data.price"


def test_events_tail_prints_events_live(env):
    run = uuid.uuid4().hex[:8]
    tail = subprocess.Popen([str(BIN / "cqrsctl"), "events", "tail", "--pattern", "product.*", "--count", "1", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert tail.stderr.readline().strip() == "ready"
        r = cqrsctl(env, "command", "AddProduct", "--data", json.dumps(
            {"productId": f"t-{run}", "name": "Tail", "price": "1", "stock": 1}), "-u", "admin", "-r", "admin")
        assert r.returncode == 0, r.stderr
        out, _ = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
    ev = json.loads(out.splitlines()[0])
    assert ev["eventType"] == "ProductAdded" and ev["aggregateId"] == f"t-{run}"


def test_pika_example_runs_the_order_scenario(env):
    r = subprocess.run([sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    assert [json.loads(lines[k])["status"] for k in ("RegisterCustomer", "AddProduct", "PlaceOrder")] == ["accepted"] * 3
    details = json.loads(lines["GetOrderDetails"])
    assert details["status"] == "ok" and details["result"]["status"] == "placed"
    assert details["result"]["totalAmount"] == "25.00"


def test_unreachable_broker_gives_one_line_and_exit_2():
    env = {**os.environ, "AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}
    r = cqrsctl(env, "query", "GetOrderDetails", "-p", "orderId=x")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "cannot reach RabbitMQ" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
