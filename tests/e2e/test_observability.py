"""Observability of the three services as separate processes: their /metrics after real
traffic (commands, events, queries, a poison event, an out-of-order event), the Grafana
dashboard against what they export, and `cqrsctl status` against the running stack."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aio_pika
import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cqrs_client import CqrsClient
from cqrs_client.errors import Duplicate, NotFound
from procs import BIN, Service

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "cqrs-orders.json"
NAMES = ("command-service", "projector-service", "query-service")
ADDRESS = {"street": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack(rabbit_vhost_url, pg_dsn, mongo_url, mongo_db_name, tmp_path_factory):
    env = {**os.environ, "AMQP_URL": rabbit_vhost_url, "POSTGRES_DSN": pg_dsn, "MONGO_URL": mongo_url,
           "MONGO_DB": mongo_db_name, "RELAY_POLL_SECONDS": "0.2"}
    logdir = tmp_path_factory.mktemp("obs-logs")
    urls, services = {}, []
    for name in NAMES:
        port = _free_port()
        urls[name] = f"http://127.0.0.1:{port}"
        services.append(Service(name, env, logdir).start(HEALTH_PORT=str(port)))
    yield {"env": env, "urls": urls, "amqp_url": rabbit_vhost_url, "services": services}
    for s in services:
        s.terminate()


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """sample name -> [(labels, value)] of one service's /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(samples, name, **labels) -> float | None:
    for got, v in samples.get(name, []):
        if all(got.get(k) == want for k, want in labels.items()):
            return v
    return None


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


@pytest.fixture(scope="module")
async def traffic(stack):
    """Real traffic through the client library: three accepted commands, a duplicate, a
    query that waits for the order and one that is not found, and a poison event."""
    run = uuid.uuid4().hex[:8]
    async with CqrsClient(stack["amqp_url"]) as c:
        await c.send("RegisterCustomer", {"customerId": f"c-{run}", "name": "Ada", "email": "ada@example.com",
                                          "creditLimit": "500"}, user_id="admin", roles=["admin"])
        await c.send("AddProduct", {"productId": f"p-{run}", "name": "Pen", "price": "2.50", "stock": 10},
                     user_id="admin", roles=["admin"])
        placed = await c.send("PlaceOrder", {"orderId": f"o-{run}", "customerId": f"c-{run}",
                                             "items": [{"productId": f"p-{run}", "quantity": 2}],
                                             "shippingAddress": ADDRESS}, user_id=f"c-{run}", roles=["customer"],
                             correlation_id=f"corr-{run}")
        with pytest.raises(Duplicate):
            await c.send("AddProduct", {"productId": f"p-{run}", "name": "Pen", "price": "2.50", "stock": 10},
                         user_id="admin", roles=["admin"])
        await c.query("GetOrderDetails", {"orderId": f"o-{run}"}, min_position=placed["position"],
                      correlation_id=f"corr-{run}")
        with pytest.raises(NotFound):
            await c.query("GetOrderDetails", {"orderId": f"missing-{run}"})
        exchange = await c.connection.channel()
        events = await exchange.get_exchange("cqrs.events")
        await events.publish(aio_pika.Message(b"not json", message_id=f"poison-{run}"), routing_key="order.Poison")
    return {"run": run, "position": placed["position"]}


def test_metrics_after_real_traffic(stack, traffic):
    urls, position = stack["urls"], traffic["position"]
    assert position == 3

    cmd = wait_for(lambda: (m := scrape(urls["command-service"]))
                   and value(m, "cqrs_outbox_published_total", type="OrderPlaced") == 1 and m)
    assert cmd, "the relay never reported OrderPlaced published"
    assert value(cmd, "cqrs_commands_total", type="PlaceOrder", outcome="accepted") == 1
    assert value(cmd, "cqrs_commands_total", type="AddProduct", outcome="accepted") == 1
    assert value(cmd, "cqrs_commands_total", type="AddProduct", outcome="duplicate") == 1
    assert value(cmd, "cqrs_command_seconds_count", type="AddProduct") == 2
    assert value(cmd, "cqrs_consumer_messages_total", service="command-service", queue="command-service.commands",
                 type="PlaceOrder", outcome="acked") == 1
    assert value(cmd, "cqrs_consumer_handler_seconds_count", queue="command-service.commands", type="PlaceOrder") == 1
    assert value(cmd, "cqrs_outbox_backlog") == 0
    assert value(cmd, "cqrs_outbox_oldest_age_seconds") == 0
    assert value(cmd, "cqrs_event_store_position") == position
    assert value(cmd, "cqrs_outbox_delay_seconds_count") == 3
    assert value(cmd, "cqrs_queue_consumers", queue="command-service.commands") == 1
    assert value(cmd, "cqrs_dlq_messages", queue="command-service.commands") == 0

    proj = wait_for(lambda: (m := scrape(urls["projector-service"]))
                    and value(m, "cqrs_dlq_messages", queue="projector-service.events") == 1
                    and value(m, "cqrs_projection_position", view="orders") == position and m)
    assert proj, "the projector never reached the order's position with the poison event in its DLQ"
    assert value(proj, "cqrs_consumer_messages_total", service="projector-service", queue="projector-service.events",
                 type="OrderPlaced", outcome="acked") == 1
    assert value(proj, "cqrs_consumer_messages_total", queue="projector-service.events",
                 type="other", outcome="dead_lettered") == 1
    assert value(proj, "cqrs_projection_events_total", type="OrderPlaced", result="changed") == 1
    for view in ("orders", "customers", "products"):
        assert value(proj, "cqrs_projection_lag_events", view=view) == 0
        assert value(proj, "cqrs_projection_lag_seconds", view=view) == 0
    assert value(proj, "cqrs_projection_delay_seconds_count") == 3

    query = scrape(urls["query-service"])
    assert value(query, "cqrs_queries_total", type="GetOrderDetails", outcome="ok") == 1
    assert value(query, "cqrs_queries_total", type="GetOrderDetails", outcome="not_found") == 1
    assert value(query, "cqrs_query_seconds_count", type="GetOrderDetails") == 2
    assert value(query, "cqrs_query_view_position") == position
    assert value(query, "cqrs_queue_messages", queue="query-service.queries") == 0


async def test_out_of_order_event_shows_as_retries_and_projection_lag(stack, traffic):
    """An event far ahead whose predecessors never came: retried (transient), and the
    projection reports how far behind it is, in events and in seconds since its commit."""
    run = traffic["run"]
    committed = datetime.now(timezone.utc) - timedelta(seconds=120)
    event = {"eventId": str(uuid.uuid4()), "eventType": "OrderShipped", "aggregateId": f"ooo-{run}",
             "aggregateType": "order", "version": 2, "position": 1000,
             "timestamp": committed.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", "correlationId": "x",
             "causationId": "x", "schemaVersion": 1,
             "data": {"orderId": f"ooo-{run}", "customerId": "c", "trackingNumber": "T"}, "metadata": {}}
    async with CqrsClient(stack["amqp_url"]) as c:
        channel = await c.connection.channel()
        exchange = await channel.get_exchange("cqrs.events")
        await exchange.publish(aio_pika.Message(json.dumps(event).encode(), message_id=event["eventId"],
                                                type="OrderShipped", content_type="application/json",
                                                headers={"x-aggregate-id": f"ooo-{run}", "x-position": 1000}),
                               routing_key="order.OrderShipped")
    url = stack["urls"]["projector-service"]
    proj = wait_for(lambda: (m := scrape(url)) and (value(m, "cqrs_consumer_messages_total", type="OrderShipped",
                                                          outcome="retried") or 0) >= 1 and m)
    assert proj, "the out-of-order event was never retried"
    assert value(proj, "cqrs_projection_lag_events", view="orders") == 1000 - traffic["position"]
    assert value(proj, "cqrs_projection_lag_seconds", view="orders") >= 120
    assert value(proj, "cqrs_projection_position", view="orders") == traffic["position"]


def test_one_correlation_id_follows_a_request_across_the_three_services(stack, traffic):
    """The JSON log lines of all three processes, filtered on one correlationId: the
    command, its event applied by the projector, and the query that read it."""
    corr = f"corr-{traffic['run']}"

    def lines():
        out = []
        for service in stack["services"]:
            for line in service.log.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("correlationId") == corr:
                    out.append(record)
        return out

    records = wait_for(lambda: (r := lines()) and {x["service"] for x in r} == set(NAMES) and r)
    assert records, f"lines with {corr}: {lines()}"
    by_service = {r["service"]: r for r in records}
    command, event, query = (by_service[n] for n in NAMES)
    assert command["commandType"] == "PlaceOrder" and command["causationId"] == command["commandId"]
    assert event["eventType"] == "OrderPlaced" and event["causationId"] == command["commandId"]
    assert event["eventId"] and event["position"] == traffic["position"]
    assert query["queryType"] == "GetOrderDetails" and query["queryId"]
    assert all(r["instance"] and r["level"] and r["time"] for r in records)


def _dashboard_metrics() -> set[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []))
            walk(p.get("panels", []))
    walk(dash["panels"])
    assert exprs, "the dashboard queries nothing"
    return {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"\bcqrs_[a-z_]+", e)}


def families(url: str) -> dict[str, str]:
    """family name -> type ("counter" families are named without _total by the parser)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        return {f.name: f.type for f in text_string_to_metric_families(resp.read().decode())}


def test_dashboard_is_valid_and_queries_only_exported_metrics(stack, traffic):
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["panels"]
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            try:  # valid PromQL once Grafana has put in its interval
                promql_parser.parse(t["expr"].replace("$__rate_interval", "5m"))
            except ValueError as exc:
                pytest.fail(f"panel {panel['title']!r}: {t['expr']}: {exc}")
    exported: dict[str, str] = {}
    for url in stack["urls"].values():
        exported.update({n: t for n, t in families(url).items()
                         if n.startswith("cqrs_") and not n.endswith("_created")})  # creation times
    # what a query may name: a counter as <name>_total, a histogram as <name>_bucket/_sum/_count
    queryable = {f"{n}_total" if t == "counter" else n for n, t in exported.items()}
    used = _dashboard_metrics()
    missing = sorted(used - queryable)
    assert not missing, f"the dashboard queries metrics no service exports: {missing}"
    uncovered = sorted(queryable - used)
    assert not uncovered, f"exported metrics that no panel shows: {uncovered}"


def cqrsctl(env, *args, timeout=60):
    return subprocess.run([str(BIN / "cqrsctl"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_status_shows_health_queues_backlog_and_lag(stack, traffic):
    env = {**stack["env"], "CQRS_COMMAND_SERVICE_URL": stack["urls"]["command-service"],
           "CQRS_PROJECTOR_SERVICE_URL": stack["urls"]["projector-service"],
           "CQRS_QUERY_SERVICE_URL": stack["urls"]["query-service"]}
    r = cqrsctl(env, "status", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    services = {s["service"]: s for s in report["services"]}
    assert all(s["reachable"] and s["ready"] for s in services.values()), services
    assert services["command-service"]["outboxBacklog"] == 0
    assert services["command-service"]["eventStorePosition"] == traffic["position"]
    views = {p["view"]: p for p in services["projector-service"]["projections"]}
    assert set(views) == {"orders", "customers", "products"}
    assert views["orders"]["position"] == traffic["position"]
    assert services["query-service"]["viewPosition"] >= traffic["position"]
    queues = {q["queue"]: q for q in report["queues"]}
    assert queues["projector-service.events"]["deadLetters"] >= 1  # the poison event
    assert queues["command-service.commands"]["consumers"] == 1 and queues["command-service.commands"]["deadLetters"] == 0
    assert queues["query-service.queries"]["consumers"] == 1

    r = cqrsctl({**env, "COLUMNS": "250"}, "status")  # the human tables
    assert r.returncode == 0, r.stderr
    for text in ("Services", "Queues", "ready", "outbox backlog 0", "view orders: position 3", "dead letters"):
        assert text in r.stdout, (text, r.stdout)

    # a service that does not answer: named, exit 1
    r = cqrsctl(env, "status", "--query-url", f"http://127.0.0.1:{_free_port()}", "--json")
    assert r.returncode == 1
    down = {s["service"]: s for s in json.loads(r.stdout)["services"]}["query-service"]
    assert not down["reachable"] and down["error"]


def test_status_explains_an_unreachable_broker(stack):
    r = cqrsctl(stack["env"], "status", "--amqp-url", f"amqp://guest:guest@127.0.0.1:{_free_port()}/")
    assert r.returncode == 2
    assert "cannot reach RabbitMQ" in r.stderr and "AMQP_URL" in r.stderr and "Traceback" not in r.stderr
