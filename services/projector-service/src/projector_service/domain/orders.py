"""The GetOrderDetails view, built from order events alone (event-carried state)."""

from __future__ import annotations

from typing import Any

from cqrs_shared.contracts.envelopes import EventEnvelope
from cqrs_shared.contracts.events import EVENT_TYPES

ORDER_EVENTS = frozenset(EVENT_TYPES["order"])
KNOWN_EVENTS = frozenset(t for types in EVENT_TYPES.values() for t in types)
# statuses no order event follows (the command side's rules: placed -> shipped -> delivered ->
# refunded, or placed -> cancelled)
FINAL_STATUSES = frozenset({"cancelled", "refunded"})


class InvalidEvent(ValueError):
    """The event lacks what the projection needs: it can never be applied."""


def _req(data: dict[str, Any], key: str) -> Any:
    if key not in data:
        raise InvalidEvent(f"data.{key} is missing")
    return data[key]


def _history(view: dict[str, Any], status: str, event: EventEnvelope) -> list[dict[str, Any]]:
    entry = {"status": status, "at": event.timestamp, "by": event.metadata.get("userId")}
    return [*view.get("history", []), entry]


def _placed(event: EventEnvelope) -> dict[str, Any]:
    d = event.data
    customer = d.get("customer") or {}
    try:
        items = [
            {"productId": i["productId"], "name": i.get("name"), "quantity": i["quantity"],
             "unitPrice": i["unitPrice"], "lineTotal": i["lineTotal"]}
            for i in _req(d, "items")
        ]
    except (KeyError, TypeError) as exc:
        raise InvalidEvent(f"data.items is malformed: {exc!r}") from exc
    view: dict[str, Any] = {
        "id": event.aggregateId,
        "status": "placed",
        "customer": {
            "id": customer.get("id", d.get("customerId")),
            "name": customer.get("name"),
            "email": customer.get("email"),
        },
        "items": items,
        "totalAmount": _req(d, "totalAmount"),
        "shippingAddress": d.get("shippingAddress"),
        "trackingNumber": None,
        "placedAt": event.timestamp,
        "shippedAt": None,
        "deliveredAt": None,
        "cancelledAt": None,
        "cancellationReason": None,
        "refundedAt": None,
        "refundReason": None,
        "version": event.version,
        "history": [],
    }
    view["history"] = _history(view, "placed", event)
    view.update(query_fields(view))
    return view


INTERNAL_FIELDS = ("customerId", "totalCents", "search")


def query_fields(view: dict[str, Any]) -> dict[str, Any]:
    """Top-level fields the list/search/summary queries filter and sort on (not returned)."""
    from cqrs_shared.money import parse_money

    cust = view.get("customer") or {}
    parts = [view.get("id"), cust.get("name"), cust.get("email"),
             *[i.get("name") for i in view.get("items", [])]]
    return {
        "customerId": cust.get("id"),
        "totalCents": parse_money(view["totalAmount"]),
        "search": "\n".join(str(p).lower() for p in parts if p),
    }


def apply_order_event(view: dict[str, Any] | None, event: EventEnvelope) -> dict[str, Any] | None:
    """Returns the new GetOrderDetails document (a new dict; `view` is not modified).

    Events that are not order events leave the view as it is. Versions are the caller's
    business (duplicates and gaps are handled before this is called)."""
    etype = event.eventType
    if etype not in ORDER_EVENTS:
        return view
    if etype == "OrderPlaced":
        return _placed(event)
    if view is None:
        raise InvalidEvent(f"{etype} for order {event.aggregateId} that was never placed")
    new = dict(view)
    d = event.data
    if etype == "OrderShipped":
        new.update(status="shipped", shippedAt=event.timestamp, trackingNumber=d.get("trackingNumber"))
    elif etype == "OrderDelivered":
        new.update(status="delivered", deliveredAt=event.timestamp)
    elif etype == "OrderCancelled":
        new.update(status="cancelled", cancelledAt=event.timestamp, cancellationReason=d.get("reason"))
    elif etype == "OrderRefunded":
        new.update(status="refunded", refundedAt=event.timestamp, refundReason=d.get("reason"))
    new["history"] = _history(view, new["status"], event)
    new["version"] = event.version
    return new
