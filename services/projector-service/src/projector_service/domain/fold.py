"""Folding a batch of events into view writes, in memory (no I/O).

Order views: per aggregate, the events are applied in version order on top of the stored
document, giving at most one write per order per batch. Duplicates (a version the view already
has) count as done; an event whose predecessor is neither stored nor in the batch is
*blocked* (it and the aggregate's later events wait for another delivery).

Reference views (customers, products) are order-independent: customer fields are set,
product info is merged with the highest product version, and the stock kept is the one carried
by the event with the highest position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cqrs_shared.contracts.envelopes import EventEnvelope

from projector_service.domain.orders import ORDER_EVENTS, InvalidEvent, apply_order_event


@dataclass
class OrderFold:
    """The outcome for one order aggregate."""

    write: dict[str, Any] | None = None  # the new document, None when nothing changes
    expected_version: int = 0  # version the stored document must have (0: insert)
    done: list[EventEnvelope] = field(default_factory=list)  # applied by `write`, or duplicates
    blocked: list[EventEnvelope] = field(default_factory=list)
    invalid: list[tuple[EventEnvelope, InvalidEvent]] = field(default_factory=list)


def fold_order(current: dict[str, Any] | None, events: list[EventEnvelope]) -> OrderFold:
    out = OrderFold()
    stored = int(current["version"]) if current else 0
    out.expected_version = stored
    doc, version = current, stored
    ordered = sorted(events, key=lambda e: (e.version, e.position))
    for i, ev in enumerate(ordered):
        if ev.version <= version:
            out.done.append(ev)  # already in the view, or a redelivery within the batch
            continue
        if ev.version != version + 1:
            out.blocked.extend(ordered[i:])
            break
        try:
            new = apply_order_event(doc, ev)
        except InvalidEvent as exc:
            out.invalid.append((ev, exc))
            out.blocked.extend(e for e in ordered[i + 1:] if e.version > ev.version)
            break
        assert new is not None
        doc, version = new, ev.version
        out.done.append(ev)
    if version > stored:
        out.write = doc
    return out


def group_orders(events: list[EventEnvelope]) -> dict[str, list[EventEnvelope]]:
    by_order: dict[str, list[EventEnvelope]] = {}
    for ev in events:
        if ev.eventType in ORDER_EVENTS:
            by_order.setdefault(ev.aggregateId, []).append(ev)
    return by_order


@dataclass
class ReferenceWrites:
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # product id -> (fields to set, product version)
    product_info: dict[str, tuple[dict[str, Any], int]] = field(default_factory=dict)
    # product id -> (stock, position of the event that carried it)
    product_stock: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.customers or self.product_info or self.product_stock)

    def __len__(self) -> int:
        return len(self.customers) + len(set(self.product_info) | set(self.product_stock))

    def merge(self, other: ReferenceWrites) -> None:
        """Adds the writes of `other` (a batch folded after this one; its positions need not be
        higher): the same outcome as writing both in either order, as the stored views are
        order-independent (customer fields set, product info merged with the highest version,
        the stock of the highest position)."""
        for cid, fields in other.customers.items():
            self.customers.setdefault(cid, {}).update(fields)
        for pid, (fields, version) in other.product_info.items():
            mine, v = self.product_info.get(pid, ({}, 0))
            self.product_info[pid] = ({**mine, **fields}, max(v, version))
        for pid, (stock, position) in other.product_stock.items():
            if self.product_stock.get(pid, (0, 0))[1] < position:
                self.product_stock[pid] = (stock, position)


def fold_references(events: list[EventEnvelope]) -> ReferenceWrites:
    out = ReferenceWrites()

    def stock(product_id: str, value: int, position: int) -> None:
        if out.product_stock.get(product_id, (0, 0))[1] < position:
            out.product_stock[product_id] = (value, position)

    for ev in sorted(events, key=lambda e: e.position):
        d, t = ev.data, ev.eventType
        if t == "CustomerRegistered":
            out.customers.setdefault(ev.aggregateId, {}).update(
                {"customerId": ev.aggregateId, "name": d.get("name"), "email": d.get("email")})
        elif t in ("ProductAdded", "ProductRestocked"):
            fields, version = out.product_info.get(ev.aggregateId, ({}, 0))
            if t == "ProductAdded":
                fields = {**fields, "name": d.get("name"), "price": d.get("price")}
            out.product_info[ev.aggregateId] = (fields, max(version, ev.version))
            if isinstance(d.get("stock"), int):
                stock(ev.aggregateId, d["stock"], ev.position)
        elif t in ("OrderPlaced", "OrderCancelled"):
            for item in d.get("items") or []:
                if isinstance(item, dict) and item.get("productId") and isinstance(item.get("stock"), int):
                    stock(item["productId"], item["stock"], ev.position)
    return out
