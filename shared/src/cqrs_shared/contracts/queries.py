"""The `parameters` of every query in the contract, and the shape of each query's `result`.

The parameter models are what the query service validates with (strict: an unknown
parameter or a wrong JSON type is a `validation_error`); clients use the same models to
check parameters before sending. The result models describe what the service answers
(documentation and typed access for clients; the service builds the result as plain JSON).
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Annotated, Any

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr,
                      model_validator)

from cqrs_shared.money import MONEY_RE, parse_money

from .envelopes import Id

STATUSES = ("placed", "shipped", "delivered", "cancelled", "refunded")
MAX_RANGE_DAYS = 366
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


def _date(v: str) -> str:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        raise ValueError("must be a date YYYY-MM-DD")
    try:
        _dt.date.fromisoformat(v)
    except ValueError:
        raise ValueError("must be a date YYYY-MM-DD") from None
    return v


def _status(v: str) -> str:
    if v not in STATUSES:
        raise ValueError(f"must be one of {', '.join(STATUSES)}")
    return v


def _money(v: str) -> str:
    parse_money(v)
    return v


# The validators give the contract's error messages; json_schema_extra makes the published
# JSON Schema (docs/asyncapi.yaml) say the same thing.
Date = Annotated[StrictStr, AfterValidator(_date),
                 Field(json_schema_extra={"format": "date", "pattern": DATE_PATTERN})]
Status = Annotated[StrictStr, AfterValidator(_status), Field(json_schema_extra={"enum": list(STATUSES)})]
MoneyIn = Annotated[StrictStr, AfterValidator(_money), Field(json_schema_extra={"pattern": MONEY_RE.pattern})]
MoneyOut = Annotated[str, Field(pattern=r"^-?\d+\.\d{2}$", description="money, exactly two decimals")]
Time = Annotated[str, Field(description="ISO 8601 UTC with milliseconds, e.g. 2026-11-22T10:30:00.123Z")]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Paged(_Params):
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


class GetOrderDetails(_Params):
    """One order as the views know it; with includeHistory its status history, oldest first."""

    orderId: Id
    includeHistory: StrictBool = False


class ListCustomerOrders(_Paged):
    """A customer's orders, newest first (an unknown customer gives an empty page)."""

    customerId: Id
    status: Status | None = None


class SearchOrders(_Paged, _Range):
    """Orders matching every given filter, newest first. text: case-insensitive substring of
    the order id, customer name or email, or a product name. Date bounds are inclusive UTC
    dates of placedAt; amount bounds inclusive."""

    text: StrictStr | None = Field(None, max_length=200)
    status: Status | None = None
    dateFrom: Date | None = None
    dateTo: Date | None = None
    minAmount: MoneyIn | None = None
    maxAmount: MoneyIn | None = None


class GetCustomerSummary(_Params):
    """Order counts and spending of one customer (not_found when the views know nothing of
    it)."""

    customerId: Id


class GetDailyOrderMetrics(_Params, _Range):
    """Per UTC day of placedAt, for days with orders, ascending."""

    dateFrom: Date
    dateTo: Date


class GetPopularProducts(_Params, _Range):
    """Products by quantity sold in counting orders (not cancelled or refunded), desc, then
    productId."""

    dateFrom: Date | None = None
    dateTo: Date | None = None
    limit: StrictInt = Field(10, ge=1, le=100)


class GetProductAvailability(_Params):
    """A product's unreserved stock and price (not_found until its ProductAdded is applied)."""

    productId: Id


# query type -> parameters model; the keys are the routing keys on cqrs.queries
QUERIES: dict[str, type[_Params]] = {
    m.__name__: m
    for m in (GetOrderDetails, ListCustomerOrders, SearchOrders, GetCustomerSummary, GetDailyOrderMetrics,
              GetPopularProducts, GetProductAvailability)
}


# --- results ---------------------------------------------------------------------------

class _Result(BaseModel):
    model_config = ConfigDict(extra="allow")  # new fields may appear (forward compatibility)


class CustomerRef(_Result):
    id: str
    name: str | None
    email: str | None


class OrderLine(_Result):
    productId: str
    name: str | None
    quantity: int
    unitPrice: MoneyOut
    lineTotal: MoneyOut


class ShippingAddress(_Result):
    street: str
    city: str
    state: str
    zip: str


class HistoryEntry(_Result):
    status: str
    at: Time
    by: str | None


class OrderDetails(_Result):
    id: str
    status: str
    customer: CustomerRef
    items: list[OrderLine]
    totalAmount: MoneyOut
    shippingAddress: ShippingAddress
    trackingNumber: str | None
    placedAt: Time | None
    shippedAt: Time | None
    deliveredAt: Time | None
    cancelledAt: Time | None
    cancellationReason: str | None
    refundedAt: Time | None
    refundReason: str | None
    version: int
    history: list[HistoryEntry] | None = Field(None, description="only with includeHistory=true, oldest first")


class OrderSummary(_Result):
    id: str
    status: str
    totalAmount: MoneyOut
    itemCount: int
    placedAt: Time


class OrderPage(_Result):
    items: list[OrderSummary]
    total: int
    page: int
    pageSize: int


class CustomerSummary(_Result):
    customerId: str
    name: str | None
    email: str | None
    totalOrders: int
    openOrders: int
    cancelledOrders: int
    totalSpent: MoneyOut
    averageOrderValue: MoneyOut
    lastOrderAt: Time | None


class DailyMetrics(_Result):
    date: Annotated[str, Field(json_schema_extra={"format": "date"})]
    orderCount: int
    cancelledCount: int
    totalRevenue: MoneyOut
    avgOrderValue: MoneyOut
    uniqueCustomers: int


class DailyOrderMetrics(_Result):
    days: list[DailyMetrics]


class PopularProduct(_Result):
    productId: str
    name: str | None
    quantitySold: int
    orderCount: int
    revenue: MoneyOut


class PopularProducts(_Result):
    products: list[PopularProduct]


class ProductAvailability(_Result):
    productId: str
    name: str | None
    price: MoneyOut | None
    stock: int | None
    version: int | None


# query type -> result model
RESULTS: dict[str, type[_Result]] = {
    "GetOrderDetails": OrderDetails,
    "ListCustomerOrders": OrderPage,
    "SearchOrders": OrderPage,
    "GetCustomerSummary": CustomerSummary,
    "GetDailyOrderMetrics": DailyOrderMetrics,
    "GetPopularProducts": PopularProducts,
    "GetProductAvailability": ProductAvailability,
}


def parameters_of(query: BaseModel) -> dict[str, Any]:
    """The `parameters` object of a typed query (defaults left out, as a client would write it)."""
    return query.model_dump(mode="json", exclude_unset=True)
