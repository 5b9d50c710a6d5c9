"""Client library and CLI for the CQRS order system."""

from .client import CqrsClient, validate_command
from .errors import (BrokerUnavailable, ConcurrencyConflict, CqrsError, CreditLimitExceeded, Duplicate, Forbidden,
                     InsufficientStock, InternalError, InvalidTransition, NotFound, ReplyError, RequestTimeout, ServiceUnavailable, Stale,
                     Unavailable, ValidationFailed)
from .sync import SyncCqrsClient

__all__ = [
    "CqrsClient", "SyncCqrsClient", "validate_command", "CqrsError", "ReplyError", "RequestTimeout", "ServiceUnavailable",
    "BrokerUnavailable", "ValidationFailed", "NotFound", "InsufficientStock", "CreditLimitExceeded",
    "InvalidTransition", "ConcurrencyConflict", "Forbidden", "Duplicate", "InternalError", "Stale", "Unavailable",
]
