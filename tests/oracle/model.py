"""An independent in-memory model of the order system, written from the contract alone.

`Model.build(records, times)` applies the ACCEPTED commands in the order of their reply
`position` (the global commit order) and can then state the expected `result` of every
query of the contract. Rejected commands are ignored: they must change nothing.

While applying, the model also checks that each accepted command was allowed by the rules of
the contract at that point of the history (roles and ownership, stock, credit limit, status
transitions, expectedVersion, ids new or existing) and that the reply's `aggregateId` and
`version` are what the contract says; anything else is recorded in `violations`.

Times: `placedAt` and the other `...At` fields are commit times chosen by the command service,
so the model cannot compute them. They are taken from the command side's `events` table in
PostgreSQL (the write model's truth): `times[position]` is the `timestamp` of the event the
command appended at its reply's `position` (see `compare.event_times`). Everything else is
computed here from the commands.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

STATUSES = ("placed", "shipped", "delivered", "cancelled", "refunded")
NOT_COUNTING = ("cancelled", "refunded")
# command -> (status required, status after, event type)
TRANSITIONS = {
    "ShipOrder": ("placed", "shipped", "OrderShipped"),
    "DeliverOrder": ("shipped", "delivered", "OrderDelivered"),
    "CancelOrder": ("placed", "cancelled", "OrderCancelled"),
    "RefundOrder": ("delivered", "refunded", "OrderRefunded"),
}
EVENT_OF = {"RegisterCustomer": "CustomerRegistered", "AddProduct": "ProductAdded",
            "RestockProduct": "ProductRestocked", "PlaceOrder": "OrderPlaced",
            **{k: v[2] for k, v in TRANSITIONS.items()}}


# ---- money, written again from the contract (no service code) ---------------------------

def cents(text: str) -> int:
    return int((Decimal(text) * 100).to_integral_value())


def money(c: int) -> str:
    return f"{'-' if c < 0 else ''}{abs(c) // 100}.{abs(c) % 100:02d}"


def average(total_cents: int, n: int) -> str:
    if n == 0:
        return "0.00"
    return money(int((Decimal(total_cents) / n).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)))


def _text(v: Any) -> Any:
    return v.strip() if isinstance(v, str) else v


# ---- state ---------------------------------------------------------------------------

@dataclass
class Customer:
    id: str
    name: str
    email: str
    credit_limit: int  # cents


@dataclass
class Product:
    id: str
    name: str
    price: int  # cents
    stock: int
    version: int = 1


@dataclass
class Order:
    id: str
    customer: Customer
    items: list[dict[str, Any]]  # productId, name, quantity, unitPrice (cents)
    address: dict[str, str]
    placed_at: str
    placed_by: str | None
    status: str = "placed"
    version: int = 1
    tracking: str | None = None
    times: dict[str, str | None] = field(default_factory=dict)
    reasons: dict[str, str | None] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(i["unitPrice"] * i["quantity"] for i in self.items)

    @property
    def counts(self) -> bool:
        return self.status not in NOT_COUNTING

    @property
    def date(self) -> str:
        return self.placed_at[:10]


def _roles(cmd: Mapping[str, Any]) -> set[str]:
    roles = (cmd.get("metadata") or {}).get("roles") or []
    return {r for r in roles if isinstance(r, str)}


class Model:
    def __init__(self) -> None:
        self.customers: dict[str, Customer] = {}
        self.products: dict[str, Product] = {}
        self.orders: dict[str, Order] = {}
        self.violations: list[str] = []
        self.applied = 0
        self.last_position = 0

    # -- building ----------------------------------------------------------------------

    @classmethod
    def build(cls, records: Iterable[Any], times: Mapping[int, str]) -> "Model":
        """`records` have `.command` and `.reply` (see workload.Sent); every commandId counts
        once (its first reply); accepted ones are applied in position order."""
        first: dict[str, Any] = {}
        for r in records:
            if r.reply is None or r.reply.get("status") != "accepted":
                continue
            first.setdefault(r.command["commandId"], r)  # resends carry the same stored reply
        m = cls()
        by_position: dict[int, Any] = {}
        for r in first.values():
            pos = r.reply["position"]
            if pos in by_position:
                m.violations.append(f"position {pos} given to {by_position[pos].command['commandId']} "
                                    f"and {r.command['commandId']}")
            by_position[pos] = r
        for pos in sorted(by_position):
            r = by_position[pos]
            if pos not in times:
                m.violations.append(f"no event at position {pos} ({r.command['commandType']})")
                continue
            m.apply(r.command, r.reply, times[pos])
        return m

    def _violation(self, cmd: Mapping[str, Any], text: str) -> None:
        self.violations.append(f"{cmd['commandType']} {cmd['commandId']}: accepted but {text}")

    def apply(self, cmd: Mapping[str, Any], reply: Mapping[str, Any], at: str) -> None:
        """Applies one accepted command (in position order), checking it was allowed."""
        t = cmd["commandType"]
        d = cmd.get("data") or {}
        user = cmd.get("userId")
        roles = _roles(cmd)
        admin = "admin" in roles
        expected = cmd.get("expectedVersion")
        self.applied += 1
        self.last_position = max(self.last_position, reply["position"])
        v = self._violation

        if t == "RegisterCustomer":
            cid = _text(d["customerId"]) if d.get("customerId") else reply["aggregateId"]
            if not (admin or ("customer" in roles and user == cid)):
                v(cmd, "the user may not register this customer")
            if cid in self.customers:
                v(cmd, "the customer already existed")
            self.customers[cid] = Customer(cid, _text(d["name"]), _text(d["email"]), cents(d["creditLimit"]))
            self._check_reply(cmd, reply, cid, 1)
        elif t == "AddProduct":
            pid = _text(d["productId"]) if d.get("productId") else reply["aggregateId"]
            if not admin:
                v(cmd, "role admin is required")
            if pid in self.products:
                v(cmd, "the product already existed")
            self.products[pid] = Product(pid, _text(d["name"]), cents(d["price"]), d["stock"])
            self._check_reply(cmd, reply, pid, 1)
        elif t == "RestockProduct":
            p = self.products.get(_text(d["productId"]))
            if p is None:
                v(cmd, "the product did not exist")
                return
            if not admin:
                v(cmd, "role admin is required")
            if expected is not None and expected != p.version:
                v(cmd, f"expectedVersion {expected} != product version {p.version}")
            p.stock += d["quantity"]
            p.version += 1
            self._check_reply(cmd, reply, p.id, p.version)
        elif t == "PlaceOrder":
            self._place(cmd, reply, at)
        elif t in TRANSITIONS:
            self._transition(cmd, reply, at)
        else:
            v(cmd, "unknown command type")

    def _check_reply(self, cmd: Mapping[str, Any], reply: Mapping[str, Any], aggregate_id: str, version: int) -> None:
        if reply.get("aggregateId") != aggregate_id or reply.get("version") != version:
            self._violation(cmd, f"replied {reply.get('aggregateId')} v{reply.get('version')}, "
                                 f"expected {aggregate_id} v{version}")

    def _place(self, cmd: Mapping[str, Any], reply: Mapping[str, Any], at: str) -> None:
        d = cmd["data"]
        v = self._violation
        roles = _roles(cmd)
        oid = _text(d["orderId"]) if d.get("orderId") else reply["aggregateId"]
        customer = self.customers.get(_text(d["customerId"]))
        if customer is None:
            v(cmd, "the customer did not exist")
            return
        if not ("admin" in roles or ("customer" in roles and cmd.get("userId") == customer.id)):
            v(cmd, "the user may not order for this customer")
        if oid in self.orders:
            v(cmd, "the order already existed")
        items = []
        for line in d["items"]:
            p = self.products.get(_text(line["productId"]))
            if p is None:
                v(cmd, f"product {line['productId']} did not exist")
                return
            if p.stock < line["quantity"]:
                v(cmd, f"product {p.id} had {p.stock} in stock, {line['quantity']} ordered")
            items.append({"productId": p.id, "name": p.name, "quantity": line["quantity"], "unitPrice": p.price})
        order = Order(oid, customer, items, {k: _text(x) for k, x in d["shippingAddress"].items()
                                             if k in ("street", "city", "state", "zip")},
                      at, cmd.get("userId"))
        open_amount = sum(o.total for o in self.orders.values()
                          if o.customer.id == customer.id and o.status in ("placed", "shipped"))
        if open_amount + order.total > customer.credit_limit:
            v(cmd, f"open {money(open_amount)} + {money(order.total)} exceeds limit {money(customer.credit_limit)}")
        for i in items:
            self.products[i["productId"]].stock -= i["quantity"]
        order.history.append({"status": "placed", "at": at, "by": cmd.get("userId")})
        self.orders[oid] = order
        self._check_reply(cmd, reply, oid, 1)

    def _transition(self, cmd: Mapping[str, Any], reply: Mapping[str, Any], at: str) -> None:
        t = cmd["commandType"]
        d = cmd["data"]
        v = self._violation
        roles = _roles(cmd)
        o = self.orders.get(_text(d["orderId"]))
        if o is None:
            v(cmd, "the order did not exist")
            return
        if t == "CancelOrder":
            if not ("admin" in roles or ("customer" in roles and cmd.get("userId") == o.customer.id)):
                v(cmd, "the user may not cancel this order")
        elif "admin" not in roles:
            v(cmd, "role admin is required")
        expected = cmd.get("expectedVersion")
        if expected is not None and expected != o.version:
            v(cmd, f"expectedVersion {expected} != order version {o.version}")
        source, target, _ = TRANSITIONS[t]
        if o.status != source:
            v(cmd, f"the order was {o.status}")
        if t == "ShipOrder":
            o.tracking = _text(d["trackingNumber"])
        if t == "CancelOrder":
            o.reasons["cancel"] = _text(d["reason"])
            for i in o.items:  # the reservation is released
                self.products[i["productId"]].stock += i["quantity"]
        if t == "RefundOrder":
            o.reasons["refund"] = _text(d["reason"])  # a refund does not return stock
        o.status = target
        o.version += 1
        o.times[target] = at
        o.history.append({"status": target, "at": at, "by": cmd.get("userId")})
        self._check_reply(cmd, reply, o.id, o.version)

    # -- queries: the expected `result`, or None for `not_found` --------------------------

    def order_details(self, order_id: str, include_history: bool = False) -> dict[str, Any] | None:
        o = self.orders.get(order_id)
        if o is None:
            return None
        result = {
            "id": o.id, "status": o.status,
            "customer": {"id": o.customer.id, "name": o.customer.name, "email": o.customer.email},
            "items": [{"productId": i["productId"], "name": i["name"], "quantity": i["quantity"],
                       "unitPrice": money(i["unitPrice"]), "lineTotal": money(i["unitPrice"] * i["quantity"])}
                      for i in o.items],
            "totalAmount": money(o.total), "shippingAddress": dict(o.address),
            "trackingNumber": o.tracking, "placedAt": o.placed_at,
            "shippedAt": o.times.get("shipped"), "deliveredAt": o.times.get("delivered"),
            "cancelledAt": o.times.get("cancelled"), "cancellationReason": o.reasons.get("cancel"),
            "refundedAt": o.times.get("refunded"), "refundReason": o.reasons.get("refund"),
            "version": o.version,
        }
        if include_history:
            result["history"] = [dict(h) for h in o.history]
        return result

    @staticmethod
    def _newest_first(orders: Iterable[Order]) -> list[Order]:
        by_id = sorted(orders, key=lambda o: o.id)
        return sorted(by_id, key=lambda o: o.placed_at, reverse=True)  # stable: id ascending on ties

    @staticmethod
    def _page(orders: list[Order], page: int, page_size: int) -> dict[str, Any]:
        chunk = orders[(page - 1) * page_size: page * page_size]
        return {"items": [{"id": o.id, "status": o.status, "totalAmount": money(o.total),
                           "itemCount": len(o.items), "placedAt": o.placed_at} for o in chunk],
                "total": len(orders), "page": page, "pageSize": page_size}

    def customer_orders(self, customer_id: str, status: str | None = None, page: int = 1,
                        page_size: int = 20) -> dict[str, Any]:
        mine = [o for o in self.orders.values()
                if o.customer.id == customer_id and (status is None or o.status == status)]
        return self._page(self._newest_first(mine), page, page_size)

    def search_orders(self, text: str | None = None, status: str | None = None, date_from: str | None = None,
                      date_to: str | None = None, min_amount: str | None = None, max_amount: str | None = None,
                      page: int = 1, page_size: int = 20) -> dict[str, Any]:
        def match(o: Order) -> bool:
            if status is not None and o.status != status:
                return False
            if text is not None:
                needle = text.lower()
                hay = [o.id, o.customer.name, o.customer.email, *(i["name"] for i in o.items)]
                if not any(needle in h.lower() for h in hay):
                    return False
            if date_from is not None and o.date < date_from:
                return False
            if date_to is not None and o.date > date_to:
                return False
            if min_amount is not None and o.total < cents(min_amount):
                return False
            if max_amount is not None and o.total > cents(max_amount):
                return False
            return True

        return self._page(self._newest_first(o for o in self.orders.values() if match(o)), page, page_size)

    def customer_summary(self, customer_id: str) -> dict[str, Any] | None:
        c = self.customers.get(customer_id)
        if c is None:
            return None
        mine = [o for o in self.orders.values() if o.customer.id == customer_id]
        counting = [o for o in mine if o.counts]
        spent = sum(o.total for o in counting)
        return {
            "customerId": c.id, "name": c.name, "email": c.email,
            "totalOrders": len(mine),
            "openOrders": sum(1 for o in mine if o.status in ("placed", "shipped")),
            "cancelledOrders": sum(1 for o in mine if o.status == "cancelled"),
            "totalSpent": money(spent),
            "averageOrderValue": average(spent, len(counting)),
            "lastOrderAt": max((o.placed_at for o in mine), default=None),
        }

    def daily_metrics(self, date_from: str, date_to: str) -> dict[str, Any]:
        days: dict[str, list[Order]] = {}
        for o in self.orders.values():
            if date_from <= o.date <= date_to:
                days.setdefault(o.date, []).append(o)
        out = []
        for day in sorted(days):
            orders = days[day]
            counting = [o for o in orders if o.counts]
            revenue = sum(o.total for o in counting)
            out.append({"date": day, "orderCount": len(orders),
                        "cancelledCount": sum(1 for o in orders if o.status == "cancelled"),
                        "totalRevenue": money(revenue), "avgOrderValue": average(revenue, len(counting)),
                        "uniqueCustomers": len({o.customer.id for o in orders})})
        return {"days": out}

    def popular_products(self, date_from: str | None = None, date_to: str | None = None,
                         limit: int = 10) -> dict[str, Any]:
        stats: dict[str, dict[str, Any]] = {}
        for o in self.orders.values():
            if not o.counts or (date_from and o.date < date_from) or (date_to and o.date > date_to):
                continue
            for i in o.items:
                s = stats.setdefault(i["productId"], {"productId": i["productId"], "name": i["name"],
                                                      "quantitySold": 0, "orderCount": 0, "revenue": 0})
                s["quantitySold"] += i["quantity"]
                s["orderCount"] += 1  # productIds are distinct within an order
                s["revenue"] += i["unitPrice"] * i["quantity"]
        ranked = sorted(stats.values(), key=lambda s: (-s["quantitySold"], s["productId"]))[:limit]
        return {"products": [{**s, "revenue": money(s["revenue"])} for s in ranked]}

    def product_availability(self, product_id: str) -> dict[str, Any] | None:
        p = self.products.get(product_id)
        if p is None:
            return None
        return {"productId": p.id, "name": p.name, "price": money(p.price), "stock": p.stock, "version": p.version}

    # -- figures -----------------------------------------------------------------------

    def dates(self) -> list[str]:
        return sorted({o.date for o in self.orders.values()})

    def check_invariants(self) -> list[str]:
        """stock = added + restocked - reserved + released, never negative; open amounts
        within credit limits (both hold after every accepted command, so at the end too)."""
        out = [f"product {p.id}: stock {p.stock} < 0" for p in self.products.values() if p.stock < 0]
        for c in self.customers.values():
            open_amount = sum(o.total for o in self.orders.values()
                              if o.customer.id == c.id and o.status in ("placed", "shipped"))
            if open_amount > c.credit_limit:
                out.append(f"customer {c.id}: open {money(open_amount)} > limit {money(c.credit_limit)}")
        return out
