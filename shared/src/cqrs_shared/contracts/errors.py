"""Error codes and the conversion of pydantic errors to contract `details`."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

VALIDATION_ERROR = "validation_error"
NOT_FOUND = "not_found"
INSUFFICIENT_STOCK = "insufficient_stock"
CREDIT_LIMIT_EXCEEDED = "credit_limit_exceeded"
INVALID_TRANSITION = "invalid_transition"
CONCURRENCY_CONFLICT = "concurrency_conflict"
FORBIDDEN = "forbidden"
DUPLICATE = "duplicate"
INTERNAL_ERROR = "internal_error"
STALE = "stale"
# not executed: the request's x-deadline passed before it was taken (see docs/protocol.md)
UNAVAILABLE = "unavailable"


def field_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    """('items', 0, 'quantity') with prefix 'data' -> 'data.items[0].quantity'."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def details_from(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    details = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        details.append({"field": field_path(loc, prefix), "message": msg})
    return details


def error_body(code: str, message: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details or []}
