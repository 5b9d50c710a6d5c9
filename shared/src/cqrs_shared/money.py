"""Exact money: integer cents inside, decimal strings on the wire. No floats anywhere."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal

MONEY_RE = re.compile(r"^\d+(\.\d{1,2})?$")


def parse_money(text: str) -> int:
    """'29.99' -> 2999. Raises ValueError for anything the contract does not allow."""
    if not isinstance(text, str) or not MONEY_RE.match(text):
        raise ValueError("money must be a string like \"10\", \"10.5\" or \"29.99\"")
    whole, _, frac = text.partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


def format_money(cents: int) -> str:
    """2999 -> '29.99'; always two decimals."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def average_money(total_cents: int, count: int) -> str:
    """Average rounded half-even to the cent, as the contract requires."""
    if count == 0:
        return "0.00"
    avg = (Decimal(total_cents) / Decimal(count)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return format_money(int(avg))
