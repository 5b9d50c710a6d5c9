from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool

from cqrs_shared.contracts.envelopes import Id


class GetOrderDetails(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    orderId: Id
    includeHistory: StrictBool = False


def order_details_result(view: dict[str, Any], include_history: bool) -> dict[str, Any]:
    result = {k: v for k, v in view.items() if k not in ("_id", "customerId", "totalCents", "search")}
    if not include_history:
        result.pop("history", None)
    else:
        result.setdefault("history", [])
    return result


# --- list, search and aggregate queries -------------------------------------------------

import datetime as _dt  # noqa: E402
import re as _re  # noqa: E402

from pydantic import Field, StrictInt, StrictStr, field_validator, model_validator  # noqa: E402

from cqrs_shared.money import average_money, format_money, parse_money  # noqa: E402

COUNTING_EXCLUDED = ("cancelled", "refunded")
STATUSES = ("placed", "shipped", "delivered", "cancelled", "refunded")
MAX_RANGE_DAYS = 366


def _date(v: str | None) -> str | None:
    if v is None:
        return v
    if not isinstance(v, str) or not _re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        raise ValueError("must be a date YYYY-MM-DD")
    _dt.date.fromisoformat(v)
    return v


def _status(v: str | None) -> str | None:
    if v is not None and v not in STATUSES:
        raise ValueError(f"must be one of {', '.join(STATUSES)}")
    return v


def _money(v: str | None) -> str | None:
    if v is not None:
        parse_money(v)
    return v


class _Paged(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    page: StrictInt = Field(1, ge=1)
    pageSize: StrictInt = Field(20, ge=1, le=100)


class _Range(BaseModel):
    @model_validator(mode="after")
    def _range(self):  # type: ignore[no-untyped-def]
        a, b = getattr(self, "dateFrom", None), getattr(self, "dateTo", None)
        if a and b:
            days = (_dt.date.fromisoformat(b) - _dt.date.fromisoformat(a)).days
            if days < 0:
                raise ValueError("dateFrom must not be after dateTo")
            if days > MAX_RANGE_DAYS:
                raise ValueError(f"dateFrom and dateTo must be at most {MAX_RANGE_DAYS} days apart")
        return self


class ListCustomerOrders(_Paged):
    customerId: Id
    status: StrictStr | None = None

    _s = field_validator("status")(lambda cls, v: _status(v))


class SearchOrders(_Paged, _Range):
    status: StrictStr | None = None
    text: StrictStr | None = Field(None, max_length=200)
    dateFrom: StrictStr | None = None
    dateTo: StrictStr | None = None
    minAmount: StrictStr | None = None
    maxAmount: StrictStr | None = None

    _d = field_validator("dateFrom", "dateTo")(lambda cls, v: _date(v))
    _m = field_validator("minAmount", "maxAmount")(lambda cls, v: _money(v))
    _s = field_validator("status")(lambda cls, v: _status(v))


class GetCustomerSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    customerId: Id


class GetDailyOrderMetrics(_Range):
    model_config = ConfigDict(extra="forbid", strict=True)
    dateFrom: StrictStr
    dateTo: StrictStr

    _d = field_validator("dateFrom", "dateTo")(lambda cls, v: _date(v))


class GetPopularProducts(_Range):
    model_config = ConfigDict(extra="forbid", strict=True)
    dateFrom: StrictStr | None = None
    dateTo: StrictStr | None = None
    limit: StrictInt = Field(10, ge=1, le=100)

    _d = field_validator("dateFrom", "dateTo")(lambda cls, v: _date(v))


class GetProductAvailability(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    productId: Id


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
