"""What `cqrsctl status` shows: the system at a glance, from where a user stands.

- Queue depths, consumers, retrying messages and dead letters come from the broker (passive
  queue declares over AMQP), so they are right wherever the broker is reachable.
- Each service's readiness, outbox backlog and projection lag come from its HTTP port
  (/readyz and /metrics), at URLs given by options or the environment
  (CQRS_COMMAND_SERVICE_URL, CQRS_PROJECTOR_SERVICE_URL, CQRS_QUERY_SERVICE_URL), by default
  the local ports of `make up` (8081, 8082, 8083). In Kubernetes: `kubectl port-forward` to
  those ports, or point the variables at the services. A service whose URL is empty is skipped.

Several replicas behind one URL: each request reaches one of them.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractRobustConnection
from prometheus_client.parser import text_string_to_metric_families

from cqrs_shared.topology import ALL_CONSUMED_QUEUES

DEFAULT_URLS = {
    "command-service": "http://127.0.0.1:8081",
    "projector-service": "http://127.0.0.1:8082",
    "query-service": "http://127.0.0.1:8083",
}
URL_ENV = {
    "command-service": "CQRS_COMMAND_SERVICE_URL",
    "projector-service": "CQRS_PROJECTOR_SERVICE_URL",
    "query-service": "CQRS_QUERY_SERVICE_URL",
}
HTTP_TIMEOUT_S = 3.0


@dataclass
class QueueStatus:
    queue: str
    exists: bool
    messages: int | None = None
    consumers: int | None = None
    retrying: int | None = None
    dead_letters: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"queue": self.queue, "exists": self.exists, "messages": self.messages,
                "consumers": self.consumers, "retrying": self.retrying, "deadLetters": self.dead_letters}


@dataclass
class ServiceStatus:
    service: str
    url: str
    reachable: bool = False
    ready: bool = False
    failing: list[str] = field(default_factory=list)
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"service": self.service, "url": self.url, "reachable": self.reachable, "ready": self.ready,
                "failing": self.failing, "error": self.error, **self.details}


async def _declare_passive(connection: AbstractRobustConnection, name: str) -> tuple[int, int] | None:
    """(messages, consumers) of a queue, None when it does not exist (that closes the channel,
    hence a channel per call)."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True, robust=False)
        result = queue.declaration_result
        return result.message_count or 0, result.consumer_count or 0
    except Exception as exc:  # aiormq ChannelNotFoundEntity: not declared on this vhost
        if "NOT_FOUND" in str(exc) or "not found" in str(exc).lower():
            return None
        raise
    finally:
        if not channel.is_closed:
            await channel.close()


async def queue_status(connection: AbstractRobustConnection) -> list[QueueStatus]:
    out = []
    for spec in ALL_CONSUMED_QUEUES:
        main = await _declare_passive(connection, spec.name)
        if main is None:
            out.append(QueueStatus(spec.name, exists=False))
            continue
        dlq = await _declare_passive(connection, spec.dlq)
        retrying = 0
        for delay in spec.retry_delays_ms:
            retry = await _declare_passive(connection, spec.retry_queue(delay))
            retrying += retry[0] if retry else 0
        out.append(QueueStatus(spec.name, True, main[0], main[1], retrying, dlq[0] if dlq else 0))
    return out


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:  # noqa: S310 - operator-given URL
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:  # 503 from /readyz carries the failing checks
        return exc.code, exc.read().decode(errors="replace")


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def _one(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float | None:
    values = samples.get(name) or []
    return values[0][1] if values else None


def _details(service: str, samples: dict[str, list[tuple[dict[str, str], float]]]) -> dict[str, Any]:
    if service == "command-service":
        backlog, age, head = (_one(samples, n) for n in (
            "cqrs_outbox_backlog", "cqrs_outbox_oldest_age_seconds", "cqrs_event_store_position"))
        return {"outboxBacklog": None if backlog is None else int(backlog),
                "outboxOldestAgeSeconds": age, "eventStorePosition": None if head is None else int(head)}
    if service == "projector-service":
        views: dict[str, dict[str, Any]] = {}
        for metric, key in (("cqrs_projection_position", "position"), ("cqrs_projection_lag_events", "lagEvents"),
                            ("cqrs_projection_lag_seconds", "lagSeconds")):
            for labels, value in samples.get(metric, []):
                view = views.setdefault(labels.get("view", ""), {"view": labels.get("view", "")})
                view[key] = value if key == "lagSeconds" else int(value)
        return {"projections": list(views.values())}
    if service == "query-service":
        position = _one(samples, "cqrs_query_view_position")
        return {"viewPosition": None if position is None else int(position)}
    return {}


def service_status(service: str, url: str) -> ServiceStatus:
    status = ServiceStatus(service, url)
    base = url.rstrip("/")
    try:
        code, body = _get(f"{base}/readyz")
        status.reachable = True
        status.ready = code == 200
        try:
            status.failing = list(json.loads(body).get("failing") or [])
        except (ValueError, AttributeError):
            pass
        code, body = _get(f"{base}/metrics")
        if code == 200:
            status.details = _details(service, _samples(body))
    except (OSError, ValueError) as exc:  # refused, timeout, DNS, bad URL
        status.error = str(getattr(exc, "reason", None) or exc)
    return status


async def collect(connection: AbstractRobustConnection, urls: dict[str, str]) -> dict[str, Any]:
    services = [asyncio.to_thread(service_status, name, url) for name, url in urls.items() if url]
    queues, *statuses = await asyncio.gather(queue_status(connection), *services)
    return {"queues": [q.as_dict() for q in queues], "services": [s.as_dict() for s in statuses]}


def healthy(report: dict[str, Any]) -> bool:
    """Every listed service reachable and ready."""
    return all(s["reachable"] and s["ready"] for s in report["services"])
