"""Client library and CLI for the CQRS order system."""

from .client import CqrsClient, command_body, query_body, validate_command, validate_query
from .errors import (BrokerUnavailable, ConcurrencyConflict, CqrsError, CreditLimitExceeded, Duplicate, Forbidden,
                     InsufficientStock, InternalError, InvalidTransition, NotFound, ReplyError, RequestTimeout, ServiceUnavailable, Stale,
                     Unavailable, ValidationFailed)
from .sync import SyncCqrsClient

__all__ = [
    "CqrsClient", "SyncCqrsClient", "validate_command", "validate_query", "command_body", "query_body", "CqrsError", "ReplyError", "RequestTimeout", "ServiceUnavailable",
    "BrokerUnavailable", "ValidationFailed", "NotFound", "InsufficientStock", "CreditLimitExceeded",
    "InvalidTransition", "ConcurrencyConflict", "Forbidden", "Duplicate", "InternalError", "Stale", "Unavailable",
]
