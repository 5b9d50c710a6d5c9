"""The oracle's model on a small history whose answers are worked out by hand from the
contract (the oracle test is only as good as this model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oracle.model import Model

ADMIN = {"userId": "boss", "metadata": {"roles": ["admin"]}}


@dataclass
class Rec:
    command: dict[str, Any]
    reply: dict[str, Any] | None


def _hist() -> tuple[list[Rec], dict[int, str]]:
    recs: list[Rec] = []
    times: dict[int, str] = {}

    def add(ctype: str, data: dict[str, Any], agg: str, version: int, at: str | None, who=ADMIN, **extra):
        n = len(recs) + 1
        accepted = at is not None
        pos = len(times) + 1 if accepted else None
        if accepted:
            times[pos] = at
        recs.append(Rec({"commandId": f"k{n}", "commandType": ctype, "data": data, **who, **extra},
                        {"commandId": f"k{n}", "status": "accepted" if accepted else "rejected", "aggregateId": agg,
                         "version": version if accepted else None, "position": pos}))

    me = {"userId": "c1", "metadata": {"roles": ["customer"]}}
    addr = {"street": " 1 Main St ", "city": "Town", "state": "TS", "zip": "1"}
    add("RegisterCustomer", {"customerId": "c1", "name": " Ada L ", "email": "ada@x.io", "creditLimit": "100"},
        "c1", 1, "2026-11-20T10:00:00.000Z", who=me)
    add("RegisterCustomer", {"customerId": "c2", "name": "Bob", "email": "bob@x.io", "creditLimit": "1000"},
        "c2", 1, "2026-11-20T10:00:00.001Z")
    add("AddProduct", {"productId": "pen", "name": "Pen", "price": "2.5", "stock": 10}, "pen", 1,
        "2026-11-20T10:00:00.002Z")
    add("AddProduct", {"productId": "ink", "name": "Ink", "price": "10", "stock": 3}, "ink", 1,
        "2026-11-20T10:00:00.003Z")
    add("PlaceOrder", {"orderId": "o1", "customerId": "c1", "shippingAddress": addr,
                       "items": [{"productId": "pen", "quantity": 2}, {"productId": "ink", "quantity": 1}]},
        "o1", 1, "2026-11-21T09:00:00.000Z", who=me)                     # 15.00
    add("PlaceOrder", {"orderId": "o2", "customerId": "c1", "shippingAddress": addr,
                       "items": [{"productId": "ink", "quantity": 5}]}, "o2", 1, None, who=me)  # rejected
    add("PlaceOrder", {"orderId": "o3", "customerId": "c2", "shippingAddress": addr,
                       "items": [{"productId": "pen", "quantity": 3}]}, "o3", 1, "2026-11-21T23:59:59.999Z")  # 7.50
    add("PlaceOrder", {"orderId": "o4", "customerId": "c1", "shippingAddress": addr,
                       "items": [{"productId": "ink", "quantity": 1}]}, "o4", 1, "2026-11-22T00:00:00.000Z", who=me)
    add("CancelOrder", {"orderId": "o4", "reason": " no "}, "o4", 2, "2026-11-22T01:00:00.000Z", who=me)
    add("ShipOrder", {"orderId": "o1", "trackingNumber": "T1"}, "o1", 2, "2026-11-22T02:00:00.000Z")
    add("DeliverOrder", {"orderId": "o1"}, "o1", 3, "2026-11-22T03:00:00.000Z")
    add("RefundOrder", {"orderId": "o1", "reason": "broken"}, "o1", 4, "2026-11-22T04:00:00.000Z")
    add("RestockProduct", {"productId": "ink", "quantity": 4}, "ink", 2, "2026-11-22T05:00:00.000Z",
        expectedVersion=1)
    return recs, times


def test_details_history_and_lists():
    m = Model.build(*_hist())
    assert not m.violations and not m.check_invariants()
    o1 = m.order_details("o1", include_history=True)
    assert o1["status"] == "refunded" and o1["version"] == 4 and o1["totalAmount"] == "15.00"
    assert o1["items"] == [{"productId": "pen", "name": "Pen", "quantity": 2, "unitPrice": "2.50", "lineTotal": "5.00"},
                           {"productId": "ink", "name": "Ink", "quantity": 1, "unitPrice": "10.00", "lineTotal": "10.00"}]
    assert o1["customer"] == {"id": "c1", "name": "Ada L", "email": "ada@x.io"}
    assert o1["shippingAddress"]["street"] == "1 Main St"
    assert [h["status"] for h in o1["history"]] == ["placed", "shipped", "delivered", "refunded"]
    assert o1["refundedAt"] == o1["history"][-1]["at"] == "2026-11-22T04:00:00.000Z"
    assert o1["history"][0]["by"] == "c1" and o1["history"][1]["by"] == "boss"
    assert o1["cancelledAt"] is None and o1["refundReason"] == "broken" and o1["trackingNumber"] == "T1"
    assert m.order_details("o2") is None  # rejected: never placed
    assert m.order_details("o4")["cancellationReason"] == "no"
    page = m.customer_orders("c1", page=1, page_size=1)
    assert page == {"items": [{"id": "o4", "status": "cancelled", "totalAmount": "10.00", "itemCount": 1,
                               "placedAt": "2026-11-22T00:00:00.000Z"}], "total": 2, "page": 1, "pageSize": 1}
    assert [i["id"] for i in m.customer_orders("c1", page=2, page_size=1)["items"]] == ["o1"]
    assert m.customer_orders("nobody")["total"] == 0
    assert [i["id"] for i in m.search_orders(text="INK")["items"]] == ["o4", "o1"]
    assert [i["id"] for i in m.search_orders(date_from="2026-11-21", date_to="2026-11-21")["items"]] == ["o3", "o1"]
    assert [i["id"] for i in m.search_orders(min_amount="7.5", max_amount="10")["items"]] == ["o4", "o3"]


def test_aggregates_and_stock():
    m = Model.build(*_hist())
    assert m.customer_summary("c1") == {
        "customerId": "c1", "name": "Ada L", "email": "ada@x.io", "totalOrders": 2, "openOrders": 0,
        "cancelledOrders": 1, "totalSpent": "0.00", "averageOrderValue": "0.00",
        "lastOrderAt": "2026-11-22T00:00:00.000Z"}
    assert m.customer_summary("c2")["averageOrderValue"] == "7.50"
    assert m.customer_summary("ghost") is None
    assert m.daily_metrics("2026-11-01", "2026-11-30")["days"] == [
        {"date": "2026-11-21", "orderCount": 2, "cancelledCount": 0, "totalRevenue": "7.50",
         "avgOrderValue": "7.50", "uniqueCustomers": 2},
        {"date": "2026-11-22", "orderCount": 1, "cancelledCount": 1, "totalRevenue": "0.00",
         "avgOrderValue": "0.00", "uniqueCustomers": 1}]
    assert m.popular_products()["products"] == [
        {"productId": "pen", "name": "Pen", "quantitySold": 3, "orderCount": 1, "revenue": "7.50"}]
    # pen: 10 - 2 (o1, refunded: not returned) - 3 (o3); ink: 3 - 1 (o1) - 1 (o4) + 1 (released) + 4
    assert m.product_availability("pen") == {"productId": "pen", "name": "Pen", "price": "2.50", "stock": 5, "version": 1}
    assert m.product_availability("ink")["stock"] == 6 and m.product_availability("ink")["version"] == 2


def test_half_even_average():
    from oracle.model import average

    assert average(1001, 2) == "5.00" and average(1003, 2) == "5.02" and average(100, 3) == "0.33"


def test_an_accepted_command_that_breaks_a_rule_is_a_violation():
    recs, times = _hist()
    # ship the cancelled order o4, and let c1 order beyond its credit limit of 100.00
    times[len(times) + 1] = "2026-11-23T00:00:00.000Z"
    recs.append(Rec({"commandId": "bad1", "commandType": "ShipOrder", **ADMIN,
                     "data": {"orderId": "o4", "trackingNumber": "T"}},
                    {"commandId": "bad1", "status": "accepted", "aggregateId": "o4", "version": 3, "position": len(times)}))
    times[len(times) + 1] = "2026-11-23T00:00:00.001Z"
    recs.append(Rec({"commandId": "bad2", "commandType": "PlaceOrder", **ADMIN,
                     "data": {"orderId": "o9", "customerId": "c1", "shippingAddress": {},
                              "items": [{"productId": "ink", "quantity": 11}]}},
                    {"commandId": "bad2", "status": "accepted", "aggregateId": "o9", "version": 1, "position": len(times)}))
    m = Model.build(recs, times)
    assert any("bad1" in v and "was cancelled" in v for v in m.violations), m.violations
    assert any("bad2" in v and "exceeds limit" in v for v in m.violations), m.violations
