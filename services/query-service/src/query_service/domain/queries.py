from __future__ import annotations

from typing import Any

# The parameter models are part of the public contract: they live in cqrs_shared so that
# clients validate with the same models (and docs/asyncapi.yaml is generated from them).
from cqrs_shared.contracts.queries import (  # noqa: F401  (re-exported for the application layer)
    MAX_RANGE_DAYS, STATUSES, GetCustomerSummary, GetDailyOrderMetrics, GetOrderDetails, GetPopularProducts,
    GetProductAvailability, ListCustomerOrders, SearchOrders)


def order_details_result(view: dict[str, Any], include_history: bool) -> dict[str, Any]:
    result = {k: v for k, v in view.items() if k not in ("_id", "customerId", "totalCents", "search")}
    if not include_history:
        result.pop("history", None)
    else:
        result.setdefault("history", [])
    return result


# --- list, search and aggregate queries -------------------------------------------------

import datetime as _dt  # noqa: E402

from cqrs_shared.money import average_money, format_money, parse_money  # noqa: E402

COUNTING_EXCLUDED = ("cancelled", "refunded")


def date_bounds(date_from: str | None, date_to: str | None) -> dict[str, str]:
    """placedAt bounds (ISO strings sort by time) for inclusive UTC dates."""
    cond: dict[str, str] = {}
    if date_from:
        cond["$gte"] = f"{date_from}T00:00:00"
    if date_to:
        cond["$lt"] = (_dt.date.fromisoformat(date_to) + _dt.timedelta(days=1)).isoformat() + "T00:00:00"
    return cond


def counts(order: dict[str, Any]) -> bool:
    return order.get("status") not in COUNTING_EXCLUDED


def _cents(order: dict[str, Any]) -> int:
    tc = order.get("totalCents")
    return tc if isinstance(tc, int) else parse_money(order["totalAmount"])


def list_item(order: dict[str, Any]) -> dict[str, Any]:
    return {"id": order["id"], "status": order["status"], "totalAmount": order["totalAmount"],
            "itemCount": len(order.get("items") or []), "placedAt": order["placedAt"]}


def customer_summary(customer_id: str, customer: dict[str, Any] | None,
                     orders: list[dict[str, Any]]) -> dict[str, Any]:
    counting = [o for o in orders if counts(o)]
    spent = sum(_cents(o) for o in counting)
    name = (customer or {}).get("name")
    email = (customer or {}).get("email")
    if customer is None and orders:
        c = orders[0].get("customer") or {}
        name, email = c.get("name"), c.get("email")
    return {
        "customerId": customer_id, "name": name, "email": email,
        "totalOrders": len(orders),
        "openOrders": sum(1 for o in orders if o.get("status") in ("placed", "shipped")),
        "cancelledOrders": sum(1 for o in orders if o.get("status") == "cancelled"),
        "totalSpent": format_money(spent),
        "averageOrderValue": average_money(spent, len(counting)),
        "lastOrderAt": max((o["placedAt"] for o in orders), default=None),
    }


def daily_metrics(orders: list[dict[str, Any]]) -> dict[str, Any]:
    days: dict[str, dict[str, Any]] = {}
    for o in orders:
        d = days.setdefault(o["placedAt"][:10], {"n": 0, "c": 0, "rev": 0, "k": 0, "cust": set()})
        d["n"] += 1
        d["cust"].add(o.get("customerId") or (o.get("customer") or {}).get("id"))
        if o.get("status") == "cancelled":
            d["c"] += 1
        if counts(o):
            d["rev"] += _cents(o)
            d["k"] += 1
    return {"days": [
        {"date": day, "orderCount": d["n"], "cancelledCount": d["c"], "totalRevenue": format_money(d["rev"]),
         "avgOrderValue": average_money(d["rev"], d["k"]), "uniqueCustomers": len(d["cust"])}
        for day, d in sorted(days.items())]}


def popular_products(orders: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    prods: dict[str, dict[str, Any]] = {}
    for o in orders:
        if not counts(o):
            continue
        seen: set[str] = set()
        for i in o.get("items") or []:
            p = prods.setdefault(i["productId"], {"name": i.get("name"), "q": 0, "o": 0, "rev": 0})
            p["q"] += i["quantity"]
            p["rev"] += parse_money(i["lineTotal"])
            if i["productId"] not in seen:
                seen.add(i["productId"])
                p["o"] += 1
    ranked = sorted(prods.items(), key=lambda kv: (-kv[1]["q"], kv[0]))[:limit]
    return {"products": [
        {"productId": pid, "name": p["name"], "quantitySold": p["q"], "orderCount": p["o"],
         "revenue": format_money(p["rev"])} for pid, p in ranked]}


def product_result(doc: dict[str, Any]) -> dict[str, Any]:
    return {"productId": doc.get("productId", doc.get("_id")), "name": doc.get("name"),
            "price": doc.get("price"), "stock": doc.get("stock"), "version": doc.get("version")}
