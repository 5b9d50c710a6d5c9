"""OpenTelemetry tracing across the AMQP hops.

Trace context travels in the AMQP headers (`traceparent`, `tracestate`; W3C trace context,
or whatever OTEL_PROPAGATORS selects): the client injects it when it sends a request, every
QueueConsumer extracts it and handles the message inside a CONSUMER span, the command
service stores the context with the events it appends (events.trace_context) and the relay
publishes each event inside a PRODUCER span that is a child of that stored context.

Exporting is set by the standard variables and off by default:

- OTEL_TRACES_EXPORTER: `none` (default), `otlp` (OTLP over HTTP/protobuf, endpoint from
  OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, headers, timeout, ...),
  `console` (JSON spans on stdout); several may be given, comma separated.
- OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_SDK_DISABLED.

With no exporter no SDK is installed: spans are non-recording, but an incoming trace
context is still passed on to the next hop, so a traced client's trace continues through
the services once they export.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

log = logging.getLogger(__name__)
tracer = trace.get_tracer("cqrs")

_configured = False


def configure(service: str, instance: str | None = None) -> bool:
    """Installs the SDK with the exporters named by OTEL_TRACES_EXPORTER; returns whether
    anything exports. Called once per process by the serve loop."""
    global _configured
    if _configured:
        return True
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "none").split(",") if n.strip()]
    names = [n for n in names if n != "none"]
    if not names or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    attributes: dict[str, Any] = {SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service}
    if instance:
        attributes[SERVICE_INSTANCE_ID] = instance
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        if name == "otlp":
            protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
            if protocol != "http/protobuf":
                raise ValueError(f"OTLP protocol {protocol!r} is not supported here; use http/protobuf")
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            exporter = OTLPSpanExporter()
        elif name == "console":
            exporter = ConsoleSpanExporter()
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not supported (otlp, console or none)")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True
    log.info("tracing: exporting spans with %s", ", ".join(names))
    return True


def shutdown() -> None:
    """Flushes and stops the exporters (end of the serve loop)."""
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


def _str_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if isinstance(value, str):
            out[key] = value
    return out


def inject(headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Adds the current trace context (`traceparent`, ...) to `headers` and returns it."""
    headers = {} if headers is None else headers
    propagate.inject(headers)
    return headers


def carrier() -> dict[str, str] | None:
    """The current trace context as a small dict to store (None when there is none)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    out: dict[str, str] = {}
    propagate.inject(out)
    return out or None


def extract(headers: Mapping[str, Any] | None) -> otel_context.Context:
    return propagate.extract(_str_headers(headers))


def _recording() -> bool:
    """True once an SDK tracer provider is installed (spans are recorded)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


_fields: frozenset[str] | None = None


def _carries_context(headers: Mapping[str, Any]) -> bool:
    global _fields
    if _fields is None:  # the header names of the configured propagators (OTEL_PROPAGATORS)
        _fields = frozenset(propagate.get_global_textmap().fields)
    return any(name in _fields for name in headers)


@contextmanager
def span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, parent: Mapping[str, Any] | None = None,
         attributes: Mapping[str, Any] | None = None) -> Iterator[trace.Span]:
    """A current span; `parent` (message headers or a stored carrier) sets its parent,
    otherwise the current context does. Exceptions are recorded and re-raised.

    Fast path: with nothing recording and no trace context to pass on, nothing is done."""
    if (not _recording() and not (parent and _carries_context(parent))
            and not trace.get_current_span().get_span_context().is_valid):
        yield trace.INVALID_SPAN
        return
    ctx = extract(parent) if parent is not None else None
    with tracer.start_as_current_span(name, context=ctx, kind=kind,
                                      attributes={k: v for k, v in (attributes or {}).items() if v is not None}) as s:
        yield s


def mark_error(s: trace.Span, message: str) -> None:
    s.set_status(Status(StatusCode.ERROR, message))


def trace_ids() -> tuple[str, str] | None:
    """(traceId, spanId) of the current span in hex, for log lines; None without one."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
