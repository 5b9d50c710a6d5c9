"""The per-service RabbitMQ users of deploy/k8s (definitions.json) on the local broker: each
can declare the topology, consume its own queue and publish where its service publishes, and
nothing else; a spoofed `user_id` is refused. Uses a throw-away vhost and users."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from cqrs_shared import topology as T

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = json.loads((ROOT / "deploy/k8s/base/rabbitmq/definitions.json").read_text())
PERMS = {p["user"]: p for p in DEFINITIONS["permissions"]}
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
BASE = pika.URLParameters(AMQP_URL)

pytestmark = pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None or BASE.host not in ("127.0.0.1", "localhost"),
    reason="needs rabbitmqctl for the broker at AMQP_URL",
)


def ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


class Env:
    def __init__(self) -> None:
        self.token = uuid.uuid4().hex[:8]
        self.vhost = f"cqrs-permtest-{self.token}"
        self.users = {svc: (f"{svc}.{self.token}", uuid.uuid4().hex) for svc in PERMS}

    def connect(self, svc: str | None) -> pika.BlockingConnection:
        creds = BASE.credentials if svc is None else pika.PlainCredentials(*self.users[svc])
        return pika.BlockingConnection(pika.ConnectionParameters(
            host=BASE.host, port=BASE.port, virtual_host=self.vhost, credentials=creds, connection_attempts=3))


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    e = Env()
    ctl("add_vhost", e.vhost)
    try:
        ctl("set_permissions", "-p", e.vhost, BASE.credentials.username, ".*", ".*", ".*")
        for svc, (user, password) in e.users.items():
            ctl("add_user", user, password)
            p = PERMS[svc]
            ctl("set_permissions", "-p", e.vhost, user, p["configure"], p["write"], p["read"])
        conn = e.connect(None)
        declare_topology(conn.channel())
        conn.close()
        yield e
    finally:
        for user, _ in e.users.values():
            subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60)
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", e.vhost], capture_output=True, timeout=60)


def declare_topology(ch) -> None:
    """What the definitions declare, i.e. what every service declares at start."""
    for ex in DEFINITIONS["exchanges"]:
        ch.exchange_declare(ex["name"], ex["type"], durable=True, arguments=ex["arguments"] or None)
    for q in DEFINITIONS["queues"]:
        ch.queue_declare(q["name"], durable=True, arguments=q["arguments"] or None)
    for b in DEFINITIONS["bindings"]:
        ch.queue_bind(b["destination"], b["source"], routing_key=b["routing_key"])


def can_consume(env: Env, svc: str, queue: str) -> bool:
    conn = env.connect(svc)
    try:
        ch = conn.channel()
        ch.basic_consume(queue, lambda *a: None)
        return True
    except ChannelClosedByBroker as exc:
        assert exc.reply_code == 403, exc
        return False
    finally:
        conn.close()


def can_publish(env: Env, svc: str, exchange: str, routing_key: str = "x", **props) -> bool:
    conn = env.connect(svc)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(exchange, routing_key, b"{}", pika.BasicProperties(**props))
        return True
    except ChannelClosedByBroker as exc:
        assert exc.reply_code in (403, 406), exc
        return False
    finally:
        conn.close()


@pytest.mark.parametrize("svc", ["command-service", "projector-service", "query-service"])
def test_each_service_can_declare_the_whole_topology(env: Env, svc: str) -> None:
    conn = env.connect(svc)
    try:
        declare_topology(conn.channel())
    finally:
        conn.close()


def test_consumers_reach_only_their_own_queues(env: Env) -> None:
    own = {"command-service": [T.COMMAND_QUEUE, T.REPLAY_QUEUE],
           "projector-service": [T.PROJECTOR_QUEUE, T.REBUILD_QUEUE, T.REBUILD_REQUEST_QUEUE],
           "query-service": [T.QUERY_QUEUE],
           "cqrsctl": []}
    for svc, specs in own.items():
        for spec in T.ALL_CONSUMED_QUEUES:
            for queue in (spec.name, spec.dlq):
                assert can_consume(env, svc, queue) is (spec in specs), (svc, queue)


def test_publishers_reach_only_their_exchanges(env: Env) -> None:
    allowed = {"command-service": {T.EVENTS_EXCHANGE}, "projector-service": {T.INTERNAL_EXCHANGE}, "query-service": set(),
               "cqrsctl": {T.COMMANDS_EXCHANGE, T.QUERIES_EXCHANGE, T.INTERNAL_EXCHANGE}}
    for svc, exchanges in allowed.items():
        for ex in (T.COMMANDS_EXCHANGE, T.QUERIES_EXCHANGE, T.EVENTS_EXCHANGE, T.INTERNAL_EXCHANGE):
            assert can_publish(env, svc, ex) is (ex in exchanges), (svc, ex)
        # replies, retries and dead letters go through the default exchange (services only)
        assert can_publish(env, svc, "", routing_key=f"{svc}.nonexistent") is (svc != "cqrsctl")


def test_the_cqrsctl_user_can_request_a_rebuild(env: Env) -> None:
    """Publishes the request and listens on direct reply-to; no projector runs on this vhost,
    so the answer is that none took it (an ACCESS_REFUSED would say it may not publish)."""
    from typer.testing import CliRunner

    from cqrs_client.cli import app

    user, password = env.users["cqrsctl"]
    url = f"amqp://{user}:{password}@{BASE.host}:{BASE.port}/{env.vhost}"
    r = CliRunner().invoke(app, ["rebuild", "--amqp-url", url, "--start-timeout", "0.5"])
    assert r.exit_code == 2 and "no projector-service took the rebuild request" in r.stderr, r.stderr


def test_spoofed_user_id_is_refused(env: Env) -> None:
    user = env.users["command-service"][0]
    assert can_publish(env, "command-service", T.EVENTS_EXCHANGE, user_id=user)
    assert not can_publish(env, "command-service", T.EVENTS_EXCHANGE, user_id=env.users["query-service"][0])
    assert not can_publish(env, "command-service", T.EVENTS_EXCHANGE, user_id="guest")


def test_the_query_service_user_can_subscribe_to_watermark_notifications(env: Env) -> None:
    """What query_service.adapters.amqp.subscribe_watermarks does, as the query-service user."""
    conn = env.connect("query-service")
    try:
        ch = conn.channel()
        name = T.WATERMARK_QUEUE_PREFIX + "host-1"
        ch.queue_declare(name, durable=False, exclusive=True, auto_delete=True,
                         arguments={"x-max-length": 100, "x-overflow": "drop-head"})
        ch.queue_bind(name, T.INTERNAL_EXCHANGE, routing_key=T.WATERMARK_ROUTING_KEY)
        ch.basic_consume(name, lambda *a: None, auto_ack=True)
    finally:
        conn.close()
    assert can_publish(env, "projector-service", T.INTERNAL_EXCHANGE, routing_key=T.WATERMARK_ROUTING_KEY)
