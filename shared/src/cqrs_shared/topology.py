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

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    def retry_queue(self, delay_ms: int) -> str:
        return f"{self.name}.retry.{delay_ms}ms"


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
# queues that replays may be sent to (a replay request cannot target arbitrary queues)
REPLAY_TARGETS = (PROJECTOR_QUEUE.name, REBUILD_QUEUE.name)

ALL_CONSUMED_QUEUES = (COMMAND_QUEUE, QUERY_QUEUE, PROJECTOR_QUEUE, REPLAY_QUEUE, REBUILD_QUEUE,
                       REBUILD_REQUEST_QUEUE)
