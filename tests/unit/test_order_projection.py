from __future__ import annotations

import pytest

from cqrs_shared.contracts.envelopes import EventEnvelope
from projector_service.domain.orders import InvalidEvent, apply_order_event


def ev(etype: str, version: int, data: dict, *, ts: str = "2026-11-22T10:30:00.123Z",
       user: str | None = "user_1", agg: str = "o1", atype: str = "order") -> EventEnvelope:
    return EventEnvelope(eventId=f"e{version}{etype}", eventType=etype, aggregateId=agg,
                         aggregateType=atype, version=version, position=version, timestamp=ts,
                         data=data, metadata={"userId": user} if user else {})


PLACED = {
    "orderId": "o1", "customerId": "c1", "customer": {"id": "c1", "name": "Ann", "email": "a@x.io"},
    "items": [{"productId": "p1", "name": "Pen", "quantity": 2, "unitPrice": "1.50",
               "lineTotal": "3.00", "stock": 8}],
    "totalAmount": "3.00", "shippingAddress": {"street": "1 Rd", "city": "C", "state": "S", "zip": "1"},
}


def placed() -> dict:
    return apply_order_event(None, ev("OrderPlaced", 1, PLACED, ts="2026-01-01T00:00:00.000Z"))


def test_placed_builds_view_with_nulls():
    v = placed()
    assert (v.pop("customerId"), v.pop("totalCents"), v.pop("search")) == ("c1", 300, "o1\nann\na@x.io\npen")
    assert v == {
        "id": "o1", "status": "placed", "customer": {"id": "c1", "name": "Ann", "email": "a@x.io"},
        "items": [{"productId": "p1", "name": "Pen", "quantity": 2, "unitPrice": "1.50", "lineTotal": "3.00"}],
        "totalAmount": "3.00", "shippingAddress": PLACED["shippingAddress"], "trackingNumber": None,
        "placedAt": "2026-01-01T00:00:00.000Z", "shippedAt": None, "deliveredAt": None,
        "cancelledAt": None, "cancellationReason": None, "refundedAt": None, "refundReason": None,
        "version": 1, "history": [{"status": "placed", "at": "2026-01-01T00:00:00.000Z", "by": "user_1"}],
    }


def test_lifecycle_shipped_delivered_refunded():
    v0 = placed()
    v1 = apply_order_event(v0, ev("OrderShipped", 2, {"orderId": "o1", "trackingNumber": "TN1"},
                                  ts="2026-01-02T00:00:00.000Z", user="ops"))
    v2 = apply_order_event(v1, ev("OrderDelivered", 3, {"orderId": "o1"}, ts="2026-01-03T00:00:00.000Z"))
    v3 = apply_order_event(v2, ev("OrderRefunded", 4, {"orderId": "o1", "reason": "broken"},
                                  ts="2026-01-04T00:00:00.000Z", user=None))
    assert v0["status"] == "placed" and len(v0["history"]) == 1  # input not mutated
    assert v3["status"] == "refunded" and v3["version"] == 4
    assert v3["trackingNumber"] == "TN1"
    assert (v3["shippedAt"], v3["deliveredAt"], v3["refundedAt"]) == (
        "2026-01-02T00:00:00.000Z", "2026-01-03T00:00:00.000Z", "2026-01-04T00:00:00.000Z")
    assert v3["refundReason"] == "broken" and v3["cancelledAt"] is None and v3["cancellationReason"] is None
    assert v3["history"] == [
        {"status": "placed", "at": "2026-01-01T00:00:00.000Z", "by": "user_1"},
        {"status": "shipped", "at": "2026-01-02T00:00:00.000Z", "by": "ops"},
        {"status": "delivered", "at": "2026-01-03T00:00:00.000Z", "by": "user_1"},
        {"status": "refunded", "at": "2026-01-04T00:00:00.000Z", "by": None},
    ]
    for h in v3["history"]:  # each history[].at equals its ...At field
        assert v3[f"{h['status']}At"] == h["at"]


def test_cancelled():
    v = apply_order_event(placed(), ev("OrderCancelled", 2, {"orderId": "o1", "reason": "changed mind",
                                                             "items": []}, ts="2026-01-05T00:00:00.000Z"))
    assert v["status"] == "cancelled" and v["cancelledAt"] == "2026-01-05T00:00:00.000Z"
    assert v["cancellationReason"] == "changed mind" and v["refundReason"] is None
    assert [h["status"] for h in v["history"]] == ["placed", "cancelled"]


def test_other_events_leave_view_alone():
    assert apply_order_event(None, ev("CustomerRegistered", 1, {}, atype="customer")) is None
    v = placed()
    assert apply_order_event(v, ev("ProductAdded", 1, {}, atype="product")) is v


def test_invalid_events():
    with pytest.raises(InvalidEvent):
        apply_order_event(None, ev("OrderShipped", 2, {"trackingNumber": "x"}))
    with pytest.raises(InvalidEvent):
        apply_order_event(None, ev("OrderPlaced", 1, {"customerId": "c1"}))
