"""The RabbitMQ topology, declared once. Every service declares what it uses at start-up
(declarations are idempotent), so any one of them can start first."""

from __future__ import annotations

from dataclasses import dataclass, field

from cqrs_shared.contracts.commands import COMMANDS

COMMANDS_EXCHANGE = "cqrs.commands"
QUERIES_EXCHANGE = "cqrs.queries"
EVENTS_EXCHANGE = "cqrs.events"

QUERY_TYPES = (
    "GetOrderDetails", "ListCustomerOrders", "SearchOrders", "GetCustomerSummary",
    "GetDailyOrderMetrics", "GetPopularProducts", "GetProductAvailability",
)

# Delays of the retry queues, one queue per delay (a per-message TTL would make messages
# with a long delay block short ones queued behind them).
RETRY_DELAYS_MS = (200, 1000, 5000, 30000)

# Queue types (docs/architecture.md, "Queue types"). Quorum queues are replicated and keep
# every message on disk; they need RabbitMQ >= 3.10 for message TTLs and at-least-once
# dead-lettering, both used here.
QUORUM = "quorum"
CLASSIC = "classic"
# A message redelivered this many times (its consumer crashed or lost the connection while
# holding it, again and again) goes to the DLQ instead of taking the service down forever.
DELIVERY_LIMIT = 20
# dead-lettering from a quorum queue that keeps the message until the target confirmed it
AT_LEAST_ONCE = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


@dataclass(frozen=True)
class ConsumedQueue:
    name: str
    exchange: str
    routing_keys: tuple[str, ...]
    # fanout exchange that the main exchange uses as its alternate exchange, bound to this
    # queue so that unroutable requests still reach the service (and get an error reply)
    alternate_exchange: str | None = None
    exchange_type: str = "direct"
    retry_delays_ms: tuple[int, ...] = field(default=RETRY_DELAYS_MS)
    # the type of the queue and its retry queues; dead-letter queues are always quorum
    queue_type: str = QUORUM
    delivery_limit: int = DELIVERY_LIMIT

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    def retry_queue(self, delay_ms: int) -> str:
        return f"{self.name}.retry.{delay_ms}ms"

    @property
    def arguments(self) -> dict[str, object]:
        """Declaration arguments of the queue itself."""
        if self.queue_type != QUORUM:
            return {"x-queue-type": self.queue_type}
        return {"x-queue-type": QUORUM, "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.dlq, **AT_LEAST_ONCE}

    @property
    def dlq_arguments(self) -> dict[str, object]:
        # no delivery limit: browsing a DLQ (get, then give back) counts as a delivery
        return {"x-queue-type": QUORUM}

    def retry_arguments(self, delay_ms: int) -> dict[str, object]:
        """A retry queue: messages wait `delay_ms`, then go back to the queue."""
        args: dict[str, object] = {"x-queue-type": self.queue_type, "x-message-ttl": delay_ms,
                                   "x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.name}
        if self.queue_type == QUORUM:
            args.update(AT_LEAST_ONCE)
        return args

    def queues(self) -> dict[str, dict[str, object]]:
        """Every queue this consumed queue needs, by name, with its arguments."""
        out = {self.name: self.arguments, self.dlq: self.dlq_arguments}
        out.update({self.retry_queue(d): self.retry_arguments(d) for d in self.retry_delays_ms})
        return out

    def bindings(self) -> list[tuple[str, str]]:
        """(exchange, routing key) pairs bound to the queue."""
        out = [(self.exchange, key) for key in self.routing_keys]
        if self.alternate_exchange:
            out.append((self.alternate_exchange, ""))
        return out


COMMAND_QUEUE = ConsumedQueue(
    name="command-service.commands",
    exchange=COMMANDS_EXCHANGE,
    routing_keys=tuple(COMMANDS),
    alternate_exchange=f"{COMMANDS_EXCHANGE}.unrouted",
)
QUERY_QUEUE = ConsumedQueue(
    name="query-service.queries",
    exchange=QUERIES_EXCHANGE,
    routing_keys=QUERY_TYPES,
    alternate_exchange=f"{QUERIES_EXCHANGE}.unrouted",
    # reads hold no state and are answered within the client's timeout: a quorum queue's
    # replicated, fsynced log would add latency to every query and protect nothing
    queue_type=CLASSIC,
)
PROJECTOR_QUEUE = ConsumedQueue(
    name="projector-service.events",
    exchange=EVENTS_EXCHANGE,
    routing_keys=("#",),
    exchange_type="topic",
)

# Internal, not part of the public contract: a consumer that needs history asks the command
# service to re-send the stored events from a position on, straight into its own queue.
INTERNAL_EXCHANGE = "cqrs.internal"
REPLAY_ROUTING_KEY = "events.replay"
REPLAY_QUEUE = ConsumedQueue(
    name="command-service.replay",
    exchange=INTERNAL_EXCHANGE,
    routing_keys=(REPLAY_ROUTING_KEY,),
)
# The history a `projector-service rebuild` replays into a fresh set of views: fed only by
# replays (no binding), consumed by the rebuild process, which retries failed batches itself
# (no retry queues) and dead-letters events that can never be applied.
REBUILD_QUEUE = ConsumedQueue(
    name="projector-service.rebuild",
    exchange=INTERNAL_EXCHANGE,
    routing_keys=(),
    retry_delays_ms=(),
)
# Rebuild requests (`cqrsctl rebuild`): every projector replica consumes this queue, so a
# request reaches exactly one of them, which runs the rebuild in-process and reports progress
# and the outcome to the request's reply_to. No retry queues: a request is acknowledged when a
# replica takes it, and is never delivered again later (a late redelivery would start a
# rebuild nobody is waiting for); a message that cannot be handled goes to the DLQ.
REBUILD_REQUEST_ROUTING_KEY = "projector.rebuild"
REBUILD_REQUEST_QUEUE = ConsumedQueue(
    name="projector-service.rebuild-requests",
    exchange=INTERNAL_EXCHANGE,
    routing_keys=(REBUILD_REQUEST_ROUTING_KEY,),
    retry_delays_ms=(),
)
# Watermark notifications: after each advance of the live views' watermark (and as a
# heartbeat every WATERMARK_HEARTBEAT_S) a projector publishes {"views": <set>, "watermark": N}
# to cqrs.internal with this routing key, transient and unconfirmed. Each query-service
# process binds a queue of its own (exclusive, auto-delete, named WATERMARK_QUEUE_PREFIX +
# instance): queries that wait for a minPosition are woken at once instead of polling MongoDB,
# and while notifications arrive the query path reads no watermark document at all. A lost
# notification costs at most a heartbeat; none for WATERMARK_FRESH_S and the query service
# reads MongoDB again (docs/architecture.md, "Watermark notifications").
WATERMARK_ROUTING_KEY = "projector.watermark"
WATERMARK_QUEUE_PREFIX = "query-service.watermark."
WATERMARK_HEARTBEAT_S = 0.5
WATERMARK_FRESH_S = 2.0
# queues that replays may be sent to (a replay request cannot target arbitrary queues)
REPLAY_TARGETS = (PROJECTOR_QUEUE.name, REBUILD_QUEUE.name)

ALL_CONSUMED_QUEUES = (COMMAND_QUEUE, QUERY_QUEUE, PROJECTOR_QUEUE, REPLAY_QUEUE, REBUILD_QUEUE,
                       REBUILD_REQUEST_QUEUE)
