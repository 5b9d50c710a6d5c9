"""Pure read-side functions: summaries, metrics, popularity, parameter validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from query_service.domain import queries as Q


def o(oid, cid, status, total, at, items=()):
    return {"id": oid, "customerId": cid, "status": status, "totalAmount": total, "placedAt": at,
            "items": [{"productId": p, "name": p.upper(), "quantity": q, "lineTotal": lt} for p, q, lt in items]}


ORDERS = [
    o("a", "c1", "placed", "1.00", "2026-01-01T10:00:00.000Z", [("p1", 1, "1.00")]),
    o("b", "c1", "delivered", "2.00", "2026-01-01T11:00:00.000Z", [("p2", 2, "2.00")]),
    o("c", "c1", "refunded", "9.00", "2026-01-02T00:00:00.000Z", [("p2", 9, "9.00")]),
    o("d", "c2", "cancelled", "5.00", "2026-01-02T01:00:00.000Z", [("p1", 5, "5.00")]),
    o("e", "c1", "shipped", "0.01", "2026-01-02T02:00:00.000Z", [("p1", 1, "0.01"), ("p3", 1, "0.00")]),
]


def test_customer_summary_counts_and_half_even_average():
    s = Q.customer_summary("c1", {"name": "Ann", "email": "a@x"}, [x for x in ORDERS if x["customerId"] == "c1"])
    assert s == {"customerId": "c1", "name": "Ann", "email": "a@x", "totalOrders": 4, "openOrders": 2,
                 "cancelledOrders": 0, "totalSpent": "3.01", "averageOrderValue": "1.00",
                 "lastOrderAt": "2026-01-02T02:00:00.000Z"}
    assert Q.customer_summary("c9", {"name": "N", "email": "e"}, [])["averageOrderValue"] == "0.00"


def test_daily_metrics():
    assert Q.daily_metrics(ORDERS)["days"] == [
        {"date": "2026-01-01", "orderCount": 2, "cancelledCount": 0, "totalRevenue": "3.00",
         "avgOrderValue": "1.50", "uniqueCustomers": 1},
        {"date": "2026-01-02", "orderCount": 3, "cancelledCount": 1, "totalRevenue": "0.01",
         "avgOrderValue": "0.01", "uniqueCustomers": 2}]


def test_popular_products_only_counting_and_tie_break():
    res = Q.popular_products(ORDERS, 10)["products"]
    assert [(p["productId"], p["quantitySold"], p["orderCount"], p["revenue"]) for p in res] == [
        ("p1", 2, 2, "1.01"), ("p2", 2, 1, "2.00"), ("p3", 1, 1, "0.00")]
    assert len(Q.popular_products(ORDERS, 1)["products"]) == 1


def test_date_bounds_inclusive_utc_days():
    b = Q.date_bounds("2026-01-01", "2026-01-31")
    assert b == {"$gte": "2026-01-01T00:00:00", "$lt": "2026-02-01T00:00:00"}
    assert b["$gte"] <= "2026-01-01T00:00:00.000Z" and "2026-01-31T23:59:59.999Z" < b["$lt"]


@pytest.mark.parametrize("model,params", [
    (Q.SearchOrders, {"page": 0}), (Q.SearchOrders, {"pageSize": 0}), (Q.SearchOrders, {"pageSize": 101}),
    (Q.SearchOrders, {"minAmount": "-1"}), (Q.SearchOrders, {"maxAmount": 5}), (Q.SearchOrders, {"status": "x"}),
    (Q.SearchOrders, {"dateFrom": "2026-02-30"}), (Q.SearchOrders, {"dateFrom": "2026-02-02", "dateTo": "2026-02-01"}),
    (Q.GetDailyOrderMetrics, {"dateFrom": "2025-01-01", "dateTo": "2026-01-03"}),
    (Q.GetDailyOrderMetrics, {"dateFrom": "2026-01-01"}),
    (Q.GetPopularProducts, {"limit": 101}), (Q.ListCustomerOrders, {"customerId": "c", "extra": 1}),
])
def test_invalid_parameters(model, params):
    with pytest.raises(ValidationError):
        model.model_validate(params)


def test_valid_defaults():
    s = Q.SearchOrders.model_validate({})
    assert (s.page, s.pageSize) == (1, 20)
    assert Q.GetPopularProducts.model_validate({}).limit == 10
    Q.GetDailyOrderMetrics.model_validate({"dateFrom": "2024-01-01", "dateTo": "2024-12-31"})  # 365 days
