"""Exporting is set by the standard OTEL_* variables: the command service as a process with
OTEL_TRACES_EXPORTER=otlp sends its spans over OTLP/HTTP to a collector (here a small HTTP
receiver in the test), continuing the trace of a request's `traceparent` header through the
command handling and the relay's publish."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from cqrs_shared.messaging.rpc import RpcClient, dumps
from procs import Service

pytestmark = pytest.mark.e2e


class Collector:
    """An OTLP/HTTP trace receiver: keeps every span POSTed to /v1/traces."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict, object]] = []  # (resource attributes, span)
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for rs in request.resource_spans:
                    resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        collector.spans.extend((resource, s) for s in ss.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_command_service_exports_spans_over_otlp(collector, rabbit_vhost_url, pg_dsn, tmp_path):
    env = {**os.environ, "AMQP_URL": rabbit_vhost_url, "POSTGRES_DSN": pg_dsn, "RELAY_POLL_SECONDS": "0.2",
           "HEALTH_PORT": str(_free_port()), "OTEL_TRACES_EXPORTER": "otlp",
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
           "OTEL_SERVICE_NAME": "orders-commands", "OTEL_BSP_SCHEDULE_DELAY": "200"}
    service = Service("command-service", env, tmp_path).start()
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    try:
        client = await RpcClient.connect(rabbit_vhost_url)
        try:
            command = {"commandId": uuid.uuid4().hex, "commandType": "AddProduct", "userId": "admin",
                       "metadata": {"roles": ["admin"]}, "data": {"name": "Pen", "price": "1.00", "stock": 1}}
            reply = await client.call_raw("cqrs.commands", "AddProduct", dumps(command),
                                          headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
        finally:
            await client.close()
        assert reply["status"] == "accepted", reply
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            mine = {s.name: (r, s) for r, s in collector.spans if s.trace_id.hex() == trace_id}
            if {"AddProduct process", "product.ProductAdded publish"} <= set(mine):
                break
            time.sleep(0.1)
    finally:
        assert service.terminate() == 0
    assert {"AddProduct process", "product.ProductAdded publish"} <= set(mine), \
        f"spans received: {[s.name for _, s in collector.spans]}"
    resource, process = mine["AddProduct process"]
    _, publish = mine["product.ProductAdded publish"]
    assert resource["service.name"] == "orders-commands"
    assert process.parent_span_id.hex() == parent_id  # continues the caller's trace
    assert publish.parent_span_id == process.span_id  # the relay continues the stored context
