"""Typed exceptions, one per error code of the contract (and docs/protocol.md)."""

from __future__ import annotations

from typing import Any


class CqrsError(Exception):
    """Base class. `reply` is the full reply body (None when there was no reply)."""

    code: str = ""

    def __init__(self, message: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reply = reply

    @property
    def error(self) -> dict[str, Any]:
        return (self.reply or {}).get("error") or {}

    @property
    def details(self) -> list[dict[str, Any]]:
        return self.error.get("details") or []


class RequestTimeout(CqrsError):
    code = "timeout"


class BrokerUnavailable(CqrsError):
    code = "broker_unavailable"


class ServiceUnavailable(CqrsError):
    """The request could not be published (e.g. its exchange does not exist: no service ever ran)."""

    code = "service_unavailable"


class ReplyError(CqrsError):
    """A rejected command or an error reply to a query."""


class ValidationFailed(ReplyError):
    code = "validation_error"


class NotFound(ReplyError):
    code = "not_found"


class InsufficientStock(ReplyError):
    code = "insufficient_stock"


class CreditLimitExceeded(ReplyError):
    code = "credit_limit_exceeded"


class InvalidTransition(ReplyError):
    code = "invalid_transition"


class ConcurrencyConflict(ReplyError):
    code = "concurrency_conflict"


class Forbidden(ReplyError):
    code = "forbidden"


class Duplicate(ReplyError):
    code = "duplicate"


class InternalError(ReplyError):
    code = "internal_error"


class Stale(ReplyError):
    code = "stale"


class Unavailable(ReplyError):
    code = "unavailable"


ERRORS_BY_CODE: dict[str, type[ReplyError]] = {
    cls.code: cls
    for cls in (ValidationFailed, NotFound, InsufficientStock, CreditLimitExceeded, InvalidTransition,
                ConcurrencyConflict, Forbidden, Duplicate, InternalError, Stale, Unavailable)
}


def error_from_reply(reply: dict[str, Any]) -> ReplyError:
    err = reply.get("error") or {}
    code = err.get("code") or "internal_error"
    cls = ERRORS_BY_CODE.get(code, ReplyError)
    exc = cls(f"{code}: {err.get('message', '')}", reply)
    if cls is ReplyError:
        exc.code = code
    return exc
