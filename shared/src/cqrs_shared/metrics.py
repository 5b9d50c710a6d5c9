"""Prometheus metrics shared by the services (prometheus_client's default registry, served
on /metrics by cqrs_shared.health).

Every name is listed in docs/operations.md ("Metrics"); the Grafana dashboard in
deploy/grafana/ queries them and tests/e2e/test_observability.py checks that each one it
uses is exported. Label values are bounded: message types outside the known set are
counted as "other".

Some values (queue depths, outbox backlog) live elsewhere (the broker, PostgreSQL): a
service registers an async refresher with `on_scrape`, and /metrics runs the refreshers
(each bounded by a timeout) just before rendering, so they are fresh when scraped and cost
nothing when nobody scrapes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Container

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

# seconds: 1 ms .. 30 s
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# seconds: 10 ms .. 10 min (delays between a commit and what follows from it)
DELAY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)

# -- every consumer (cqrs_shared.messaging.consumer.QueueConsumer) ---------------------------
CONSUMED = Counter(
    "cqrs_consumer_messages_total",
    "Messages taken from a queue, by outcome: acked (handled), retried (transient failure, "
    "sent to a retry queue), dead_lettered (sent to the DLQ), expired (past x-deadline), "
    "channel_lost (its channel went away before it was acknowledged: delivered again).",
    ["service", "queue", "type", "outcome"])
HANDLER_SECONDS = Histogram(
    "cqrs_consumer_handler_seconds", "Time a handler took for one message (each attempt).",
    ["service", "queue", "type"], buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("cqrs_consumer_in_flight", "Messages being handled now.", ["service", "queue"])
QUEUE_MESSAGES = Gauge("cqrs_queue_messages", "Messages ready in a consumed queue (broker's count).", ["queue"])
QUEUE_CONSUMERS = Gauge("cqrs_queue_consumers", "Consumers attached to a consumed queue.", ["queue"])
RETRY_MESSAGES = Gauge("cqrs_queue_retry_messages", "Messages waiting in a queue's retry queues.", ["queue"])
DLQ_MESSAGES = Gauge("cqrs_dlq_messages", "Messages in a queue's dead-letter queue (<queue>.dlq).", ["queue"])

# -- command service -----------------------------------------------------------------------
COMMANDS = Counter(
    "cqrs_commands_total", "Commands answered, by type and outcome (accepted or the error code).",
    ["type", "outcome"])
COMMAND_SECONDS = Histogram(
    "cqrs_command_seconds", "Time to decide a command (validation, rules, transaction), by type.",
    ["type"], buckets=LATENCY_BUCKETS)
OUTBOX_BACKLOG = Gauge("cqrs_outbox_backlog", "Committed events not yet published (published_at IS NULL).")
OUTBOX_OLDEST_AGE = Gauge("cqrs_outbox_oldest_age_seconds",
                          "Age of the oldest unpublished event (0 when the outbox is empty).")
EVENT_STORE_POSITION = Gauge("cqrs_event_store_position", "Highest position in the event store.")
OUTBOX_PUBLISHED = Counter("cqrs_outbox_published_total", "Events published by the relay (confirmed).", ["type"])
OUTBOX_PUBLISH_SECONDS = Histogram(
    "cqrs_outbox_publish_seconds", "Time to publish one relay batch and receive every confirm.",
    buckets=LATENCY_BUCKETS)
OUTBOX_DELAY_SECONDS = Histogram(
    "cqrs_outbox_delay_seconds", "Per event: from commit to the broker's publisher confirm.",
    buckets=DELAY_BUCKETS)

# -- projector -----------------------------------------------------------------------------
PROJECTED = Counter(
    "cqrs_projection_events_total", "Events handled by the projector, by type and result: changed (the order view changed) or unchanged (a duplicate, or customer/product views only).",
    ["type", "result"])
PROJECTION_POSITION = Gauge("cqrs_projection_position", "Watermark: every event up to it is applied.", ["view"])
PROJECTION_LAG_EVENTS = Gauge(
    "cqrs_projection_lag_events", "Events received by the projector but not yet covered by the watermark.", ["view"])
PROJECTION_LAG_SECONDS = Gauge(
    "cqrs_projection_lag_seconds",
    "Age (since commit) of the oldest received event not yet covered by the watermark; 0 when caught up.", ["view"])
PROJECTION_DELAY_SECONDS = Histogram(
    "cqrs_projection_delay_seconds", "Per event: from commit to applied in the views.", buckets=DELAY_BUCKETS)

# -- query service -------------------------------------------------------------------------
QUERIES = Counter("cqrs_queries_total", "Queries answered, by type and outcome (ok or the error code).",
                  ["type", "outcome"])
QUERY_SECONDS = Histogram("cqrs_query_seconds", "Time to answer a query (including a minPosition wait), by type.",
                          ["type"], buckets=LATENCY_BUCKETS)
QUERY_VIEW_POSITION = Gauge("cqrs_query_view_position", "Watermark of the views as the query service last saw it.")

Refresher = Callable[[], Awaitable[None]]
_refreshers: list[Refresher] = []


def on_scrape(refresher: Refresher) -> Callable[[], None]:
    """Runs `refresher` before each /metrics rendering; returns a function that removes it."""
    _refreshers.append(refresher)

    def remove() -> None:
        if refresher in _refreshers:
            _refreshers.remove(refresher)
    return remove


async def refresh(timeout: float = 2.0) -> None:
    """Runs every refresher concurrently; one that fails or is slow keeps its old values."""
    if not _refreshers:
        return
    results = await asyncio.gather(*(asyncio.wait_for(r(), timeout) for r in list(_refreshers)),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            log.debug("metrics refresher failed: %r", result)


def label(value: str | None, known: Container[str], other: str = "other") -> str:
    """`value` when it is one of `known`, else `other` (label values stay bounded)."""
    return value if value in known else other
