"""One trace across the AMQP hops, on the real broker, PostgreSQL and MongoDB: the client's
send span -> the command service's process span -> the relay's publish span (a later task,
continued from the trace context stored with the event) -> the projector's process span,
and the query in the same trace. Spans are kept by an in-memory exporter."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from cqrs_client import CqrsClient
from cqrs_shared import logs
from projector_service.config import ProjectorSettings
from projector_service.wiring import build as build_projector
from query_service.config import QuerySettings
from query_service.wiring import build as build_query

ADDRESS = {"street": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}


@pytest.fixture(scope="module")
def exporter():
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first SDK provider of this process
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


@pytest.fixture(scope="module")
async def stack(exporter, command_app, rabbit_vhost_url, mongo_url, mongo_db_name):
    common = {"amqp_url": rabbit_vhost_url, "mongo_url": mongo_url, "mongo_db": mongo_db_name, "health_port": -1}
    projector = await build_projector(ProjectorSettings(**common))
    query = await build_query(QuerySettings(**common))
    yield
    await query.stop()
    await projector.stop()


async def _spans_of(exporter, trace_id, names, timeout=15.0):
    """The finished spans of `trace_id`, once every name in `names` is among them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
        if names <= {s.name for s in spans} or asyncio.get_running_loop().time() > deadline:
            return {s.name: s for s in spans}
        await asyncio.sleep(0.05)


async def test_one_trace_links_command_event_view_update_and_query(stack, exporter, rabbit_vhost_url, caplog):
    run = uuid.uuid4().hex[:8]
    tracer = trace.get_tracer("test")
    async with CqrsClient(rabbit_vhost_url) as client:
        await client.send("RegisterCustomer", {"customerId": f"c-{run}", "name": "Ada", "email": "ada@example.com",
                                               "creditLimit": "500"}, user_id="admin", roles=["admin"])
        await client.send("AddProduct", {"productId": f"p-{run}", "name": "Pen", "price": "2.50", "stock": 10},
                          user_id="admin", roles=["admin"])
        with tracer.start_as_current_span("checkout") as root:
            placed = await client.send("PlaceOrder", {
                "orderId": f"o-{run}", "customerId": f"c-{run}", "items": [{"productId": f"p-{run}", "quantity": 2}],
                "shippingAddress": ADDRESS}, user_id=f"c-{run}", roles=["customer"])
            reply = await client.query("GetOrderDetails", {"orderId": f"o-{run}"}, min_position=placed["position"])
    assert reply["result"]["status"] == "placed"

    trace_id = root.get_span_context().trace_id
    names = {"checkout", "PlaceOrder send", "PlaceOrder process", "order.OrderPlaced publish",
             "OrderPlaced process", "GetOrderDetails send", "GetOrderDetails process"}
    spans = await _spans_of(exporter, trace_id, names)
    assert names <= set(spans), f"spans of the trace: {sorted(spans)}"

    def parent_of(name):
        return spans[name].parent.span_id if spans[name].parent else None

    # client send -> command handled -> relay publish -> projector apply: each the child of the one before
    assert parent_of("PlaceOrder send") == spans["checkout"].context.span_id
    assert parent_of("PlaceOrder process") == spans["PlaceOrder send"].context.span_id
    assert parent_of("order.OrderPlaced publish") == spans["PlaceOrder process"].context.span_id
    assert parent_of("OrderPlaced process") == spans["order.OrderPlaced publish"].context.span_id
    assert parent_of("GetOrderDetails process") == spans["GetOrderDetails send"].context.span_id
    assert spans["PlaceOrder send"].kind == SpanKind.CLIENT
    assert spans["PlaceOrder process"].kind == SpanKind.CONSUMER
    assert spans["order.OrderPlaced publish"].kind == SpanKind.PRODUCER
    assert spans["OrderPlaced process"].attributes["messaging.destination.name"] == "projector-service.events"
    assert spans["order.OrderPlaced publish"].attributes["cqrs.position"] == placed["position"]
    # the relay published later, in its own task: the link is the context stored with the event
    assert spans["order.OrderPlaced publish"].start_time >= spans["PlaceOrder process"].start_time


async def test_log_lines_carry_the_trace_and_the_message_ids(stack, exporter, rabbit_vhost_url):
    """The JSON log filter adds traceId/spanId of the current span next to the bound ids."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep()
    handler.addFilter(logs._ContextFilter("test", "i1"))
    logger = logging.getLogger("command_service")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        run = uuid.uuid4().hex[:8]
        with trace.get_tracer("test").start_as_current_span("register") as root:
            async with CqrsClient(rabbit_vhost_url) as client:
                await client.send("RegisterCustomer", {"customerId": f"l-{run}", "name": "Lin", "email": "l@example.com",
                                                       "creditLimit": "1"}, user_id="admin", roles=["admin"],
                                  correlation_id=f"corr-{run}")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    mine = [r for r in records if getattr(r, "correlationId", None) == f"corr-{run}"]
    assert mine, "the command service logged nothing for the command"
    assert mine[0].traceId == format(root.get_span_context().trace_id, "032x")
    assert mine[0].commandId and mine[0].causationId == mine[0].commandId
