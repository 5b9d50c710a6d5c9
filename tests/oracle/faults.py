"""Forcing redeliveries on a test's own vhost: history replays, duplicate events, and the
broker's view of what a consumer process holds (for kill -9 figures)."""

from __future__ import annotations

import json
import random
import subprocess
import urllib.parse
from typing import Any

import aio_pika
import asyncpg

PROJECTOR_QUEUE = "projector-service.events"


def vhost_of(amqp_url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(amqp_url).path[1:]) or "/"


async def request_replay(amqp_url: str, from_position: int) -> None:
    """What a projector asks at start: the command service re-sends every stored event from
    `from_position` on into the projector's queue (internal exchange, not the contract)."""
    conn = await aio_pika.connect(amqp_url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.get_exchange("cqrs.internal")
        await ex.publish(aio_pika.Message(json.dumps({"fromPosition": from_position, "queue": PROJECTOR_QUEUE}).encode(),
                                          content_type="application/json"), routing_key="events.replay")
    finally:
        await conn.close()


async def republish_events(amqp_url: str, dsn: str, count: int, rng: random.Random) -> int:
    """Publishes `count` already stored events again to cqrs.events, as the relay does after
    a crash between publishing and marking (same eventId), in random order."""
    db = await asyncpg.connect(dsn)
    try:
        rows = await db.fetch("SELECT aggregate_type, aggregate_id, event_type, position, envelope::text AS envelope "
                              "FROM events ORDER BY random() LIMIT $1", count)
    finally:
        await db.close()
    rows = list(rows)
    rng.shuffle(rows)
    conn = await aio_pika.connect(amqp_url)
    try:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.get_exchange("cqrs.events")
        for r in rows:
            env = json.loads(r["envelope"])
            await ex.publish(aio_pika.Message(
                r["envelope"].encode(), content_type="application/json", message_id=env["eventId"],
                type=r["event_type"], delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={"x-aggregate-id": r["aggregate_id"], "x-position": r["position"]}),
                routing_key=f"{r['aggregate_type']}.{r['event_type']}")
    finally:
        await conn.close()
    return len(rows)


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True).stdout


def queue_depths(vhost: str, prefix: str = PROJECTOR_QUEUE) -> dict[str, tuple[int, int]]:
    """{queue: (ready, unacknowledged)} for the queues whose name starts with `prefix`."""
    out: dict[str, tuple[int, int]] = {}
    for line in rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "name", "messages_ready",
                            "messages_unacknowledged").splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0].startswith(prefix):
            out[parts[0]] = (int(parts[1]), int(parts[2]))
    return out


def unacked_held_by(pid: int, vhost: str) -> int:
    """Messages delivered to process `pid` and not yet acknowledged (its channels' counts,
    matched by the client port in the channel names)."""
    import psutil

    ports = {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.raddr and c.raddr.port}
    held = 0
    for line in rabbitmqctl("list_channels", "--no-table-headers", "name", "vhost", "messages_unacknowledged").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[1] != vhost:
            continue
        try:
            port = int(parts[0].split(" -> ")[0].rsplit(":", 1)[1])
        except (IndexError, ValueError):
            continue
        if port in ports:
            held += int(parts[2])
    return held


def wait_drained(vhost: str, timeout: float = 120.0, prefix: str = PROJECTOR_QUEUE) -> dict[str, Any]:
    """Waits until the projector's queue and its retry queues hold nothing (duplicates and
    replays are processed too, not only the events the watermark waits for)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        depths = queue_depths(vhost, prefix)
        busy = {q: d for q, d in depths.items() if not q.endswith(".dlq") and d != (0, 0)}
        if not busy or time.monotonic() > deadline:
            return {"busy": busy, "dlq": depths.get(f"{prefix}.dlq", (0, 0))[0]}
        time.sleep(0.5)
