"""Structured JSON logs: one JSON object per line on stderr, with the service, the instance
and whatever identifies the message being handled (correlationId, causationId, commandId,
eventId, queryId, messageId) and the trace (traceId, spanId), so one request can be followed across the three services
with a single filter, e.g. `jq 'select(.correlationId == "corr_abc")'`.

The identifiers live in a context variable: each message is handled in its own asyncio task,
so what one handler binds never leaks into another's lines.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from cqrs_shared.tracing import trace_ids

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("cqrs_log_context", default={})


def bind(**fields: Any) -> None:
    """Adds fields to every log line of the current task (None values are ignored)."""
    _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def clear() -> None:
    _context.set({})


def current() -> dict[str, Any]:
    return dict(_context.get())


class _ContextFilter(logging.Filter):
    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self.service, self.instance = service, instance

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.instance = self.instance
        for key, value in _context.get().items():
            setattr(record, key, value)
        ids = trace_ids()
        if ids is not None:
            record.traceId, record.spanId = ids
        return True


def configure(service: str, instance: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(
        "{asctime}{levelname}{name}{message}", style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    ))
    handler.addFilter(_ContextFilter(service, instance))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
