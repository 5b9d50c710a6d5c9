"""JSON as the standard defines it. Python's json module also reads `NaN`, `Infinity` and
numbers too large for a float (`1e400` becomes inf), which are not JSON, which no other
client could send back, and which PostgreSQL's jsonb refuses: here they are errors."""

from __future__ import annotations

import json
import math
from typing import Any


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def loads(data: bytes | str) -> Any:
    """json.loads, refusing what is not standard JSON (ValueError, or RecursionError for
    nesting too deep to parse)."""
    return json.loads(data, parse_constant=_no_constant, parse_float=_finite)
