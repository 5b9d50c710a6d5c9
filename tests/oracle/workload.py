"""A seeded random workload of all eight commands, sent concurrently through the real
command service.

`Workload(seed)` generates commands from what it believes the system holds (updated from
each reply), with a realistic share of commands the service must reject: not enough stock,
credit limit, invalid transitions, forbidden (by role and by ownership), duplicates, stale
`expectedVersion`, unknown ids and malformed data; and resends of earlier `commandId`s
(which must get the first reply again and change nothing).

`run_workload(client, workload, total)` sends them in concurrent batches (commands of one
batch race each other, e.g. a ship and a cancel of the same order) and returns every
`Sent` record: the command, its reply, and, where the outcome does not depend on the
interleaving, the outcomes the contract allows (`expect`). The intents are seeded; which of
two racing commands wins depends on the run.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cqrs_shared.messaging.rpc import RpcTimeout

COMMAND_TYPES = ("RegisterCustomer", "AddProduct", "RestockProduct", "PlaceOrder",
                 "ShipOrder", "DeliverOrder", "CancelOrder", "RefundOrder")
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Zoë", "Søren",
         "Frances", "John", "Radia", "Tim", "Hedy", "Niklaus", "Lynn", "Guido", "Anita", "Björn"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson",
        "Ødegaard", "Kierkegaard", "Allen", "Backus", "Perlman", "Berners-Lee", "Lamarr", "Wirth"]
ADJ = ["Red", "Blue", "Quiet", "Rapid", "Tiny", "Grand", "Silver", "Amber", "Solid", "Smart"]
NOUN = ["Widget", "Gadget", "Lamp", "Kettle", "Pen", "Notebook", "Chair", "Desk", "Mug", "Cable"]
CITIES = [("Springfield", "IL"), ("Portland", "OR"), ("Austin", "TX"), ("Madison", "WI")]


@dataclass
class Sent:
    command: dict[str, Any]
    reply: dict[str, Any] | None = None
    resend_of: "Sent | None" = None
    # outcomes the contract allows whatever the interleaving ("accepted" or error codes);
    # None when it depends on which of racing commands ran first
    expect: frozenset[str] | None = None
    attempts: int = 0

    @property
    def type(self) -> str:
        return self.command["commandType"]

    @property
    def outcome(self) -> str:
        if self.reply is None:
            return "no reply"
        if self.reply.get("status") == "accepted":
            return "accepted"
        return (self.reply.get("error") or {}).get("code") or "?"


@dataclass
class _Customer:
    id: str
    name: str
    email: str
    limit: int  # cents
    open: int = 0


@dataclass
class _Product:
    id: str
    name: str
    price: int
    stock: int
    version: int = 1


@dataclass
class _Order:
    id: str
    customer: str
    total: int
    status: str = "placed"
    version: int = 1


def _money(c: int) -> str:
    whole, frac = divmod(c, 100)
    if frac == 0 and whole % 3 == 0:
        return str(whole)  # "12": money may come without decimals
    if frac % 10 == 0 and whole % 2 == 0:
        return f"{whole}.{frac // 10}"  # "12.5"
    return f"{whole}.{frac:02d}"


class Workload:
    """Generates commands; `observe()` each reply so later commands build on the outcome."""

    def __init__(self, seed: int, *, customers: int = 120, products: int = 40, run: str | None = None) -> None:
        self.rng = random.Random(seed)
        self.run = run or f"w{seed}"
        self.n_customers, self.n_products = customers, products
        self.customers: dict[str, _Customer] = {}
        self.products: dict[str, _Product] = {}
        self.orders: dict[str, _Order] = {}
        self.accepted: list[Sent] = []  # with a reply, for resends
        self._seq = 0

    # -- helpers ----------------------------------------------------------------------

    def _next(self, prefix: str) -> str:
        self._seq += 1
        return f"{self.run}-{prefix}{self._seq}"

    def _cmd(self, ctype: str, data: dict[str, Any], *, user: str | None = "admin", roles=("admin",),
             expected_version: int | None = None) -> dict[str, Any]:
        cmd = {"commandId": uuid.UUID(int=self.rng.getrandbits(128)).hex, "commandType": ctype,
               "timestamp": "2026-11-23T00:00:00Z", "userId": user, "data": data,
               "metadata": {"roles": list(roles), "correlationId": f"{self.run}-corr", "clientId": "oracle"}}
        if expected_version is not None:
            cmd["expectedVersion"] = expected_version
        return cmd

    def _as_customer(self, cid: str) -> dict[str, Any]:
        return {"user": cid, "roles": ("customer",)}

    def _address(self) -> dict[str, str]:
        city, state = self.rng.choice(CITIES)
        street = f"{self.rng.randint(1, 999)} Main St"
        if self.rng.random() < 0.05:
            street = f"  {street} "  # text fields are trimmed
        return {"street": street, "city": city, "state": state, "zip": f"{self.rng.randint(10000, 99999)}"}

    # -- setup: customers and products ------------------------------------------------

    def setup(self) -> list[Sent]:
        out = []
        for n in range(self.n_customers):
            out.append(self._register(new_id=f"{self.run}-c{n}"))
        for n in range(self.n_products):
            out.append(self._add_product(new_id=f"{self.run}-p{n}"))
        self.rng.shuffle(out)
        return out

    def _register(self, new_id: str | None = None) -> Sent:
        r = self.rng.random()
        if new_id is None and self.customers and r < 0.15:  # an id that exists
            c = self.rng.choice(list(self.customers.values()))
            return Sent(self._cmd("RegisterCustomer", {"customerId": c.id, "name": "Again", "email": "a@b.io",
                                                       "creditLimit": "10"}), expect=frozenset({"duplicate"}))
        cid = new_id or self._next("cx")
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        name = f"{first} {last}"
        email = f"{first.lower()}.{last.lower()}.{cid.rsplit('-', 1)[-1]}@example.com"
        limit = self.rng.choice([0, 5000, 50000, 200000, 500000, 1000000, 2000000, 5000000])
        data = {"customerId": cid, "name": name if self.rng.random() > 0.05 else f" {name}  ",
                "email": email, "creditLimit": _money(limit)}
        if r < 0.05:
            data["email"] = "not-an-email"
            return Sent(self._cmd("RegisterCustomer", data), expect=frozenset({"validation_error"}))
        if r < 0.08:  # another customer may not register this one
            return Sent(self._cmd("RegisterCustomer", data, user=f"{self.run}-someone", roles=("customer",)),
                        expect=frozenset({"forbidden"}))
        kw = self._as_customer(cid) if self.rng.random() < 0.5 else {}
        return Sent(self._cmd("RegisterCustomer", data, **kw), expect=frozenset({"accepted"}))

    def _add_product(self, new_id: str | None = None) -> Sent:
        r = self.rng.random()
        if new_id is None and self.products and r < 0.15:
            p = self.rng.choice(list(self.products.values()))
            return Sent(self._cmd("AddProduct", {"productId": p.id, "name": "Again", "price": "1", "stock": 1}),
                        expect=frozenset({"duplicate"}))
        pid = new_id or self._next("px")
        name = f"{self.rng.choice(ADJ)} {self.rng.choice(NOUN)} {pid.rsplit('-', 1)[-1]}"
        data = {"productId": pid, "name": name, "price": _money(self.rng.randint(50, 20000)),
                "stock": self.rng.randint(0, 120)}
        if r < 0.05:
            data["price"] = self.rng.choice(["0", "1.234", "-3"])
            return Sent(self._cmd("AddProduct", data), expect=frozenset({"validation_error"}))
        if r < 0.08:
            return Sent(self._cmd("AddProduct", data, user=f"{self.run}-c0", roles=("customer",)),
                        expect=frozenset({"forbidden"}))
        if new_id is None and r < 0.12:
            del data["productId"]  # the service generates the id
        return Sent(self._cmd("AddProduct", data), expect=frozenset({"accepted"}))

    # -- the mixed phase ---------------------------------------------------------------

    WEIGHTS = {"PlaceOrder": 34, "ShipOrder": 14, "DeliverOrder": 10, "CancelOrder": 10, "RefundOrder": 6,
               "RestockProduct": 8, "RegisterCustomer": 5, "AddProduct": 3, "resend": 4}

    def batch(self, size: int) -> list[Sent]:
        kinds = self.rng.choices(list(self.WEIGHTS), weights=list(self.WEIGHTS.values()), k=size)
        return [self._one(k) for k in kinds]

    def _one(self, kind: str) -> Sent:
        if kind == "resend" and self.accepted:
            return self._resend()
        if kind == "RegisterCustomer" or not self.customers:
            return self._register()
        if kind == "AddProduct" or not self.products:
            return self._add_product()
        if kind == "RestockProduct":
            return self._restock()
        if kind in ("PlaceOrder", "resend") or not self.orders:
            return self._place()
        return self._transition(kind)

    def _resend(self) -> Sent:
        first = self.rng.choice(self.accepted[-500:])
        cmd = {**first.command}
        if self.rng.random() < 0.3:  # whatever the body, the stored reply comes back
            cmd["data"] = {**cmd["data"], "reason": "changed my mind", "quantity": 999}
        return Sent(cmd, resend_of=first)

    def _restock(self) -> Sent:
        r = self.rng.random()
        if r < 0.04:
            return Sent(self._cmd("RestockProduct", {"productId": f"{self.run}-nope", "quantity": 5}),
                        expect=frozenset({"not_found"}))
        p = self.rng.choice(list(self.products.values()))
        data = {"productId": p.id, "quantity": self.rng.randint(1, 40)}
        if r < 0.08:
            return Sent(self._cmd("RestockProduct", data, user=f"{self.run}-c1", roles=("customer",)),
                        expect=frozenset({"forbidden"}))
        if r < 0.11:
            data["quantity"] = 0
            return Sent(self._cmd("RestockProduct", data), expect=frozenset({"validation_error"}))
        if r < 0.18 and p.version >= 2:  # versions only grow: a stale one always conflicts
            return Sent(self._cmd("RestockProduct", data, expected_version=p.version - 1),
                        expect=frozenset({"concurrency_conflict"}))
        if r < 0.30:
            return Sent(self._cmd("RestockProduct", data, expected_version=p.version))  # may race
        return Sent(self._cmd("RestockProduct", data), expect=frozenset({"accepted"}))

    def _place(self) -> Sent:
        rng = self.rng
        c = rng.choice(list(self.customers.values()))
        n = min(len(self.products), rng.choice([1, 1, 1, 2, 2, 3, 4, 6]))
        prods = rng.sample(list(self.products.values()), n)
        items = [{"productId": p.id, "quantity": rng.choice([1, 1, 1, 2, 2, 3, 5])} for p in prods]
        oid = self._next("o")
        data = {"orderId": oid, "customerId": c.id, "items": items, "shippingAddress": self._address()}
        who = self._as_customer(c.id) if rng.random() < 0.85 else {}
        r = rng.random()
        if r < 0.05:  # more than any product has (stock stays far below 1000)
            items[0]["quantity"] = rng.randint(900, 1000)
            return Sent(self._cmd("PlaceOrder", data, **who))
        if r < 0.08:
            other = rng.choice(list(self.customers.values()))
            if other.id != c.id:
                return Sent(self._cmd("PlaceOrder", data, **self._as_customer(other.id)),
                            expect=frozenset({"forbidden"}))
        if r < 0.10:
            data["items"] = [*items, {"productId": f"{self.run}-nope", "quantity": 1}]
            return Sent(self._cmd("PlaceOrder", data, **who), expect=frozenset({"not_found"}))
        if r < 0.12:
            data["items"] = [*items, dict(items[0])]
            return Sent(self._cmd("PlaceOrder", data, **who), expect=frozenset({"validation_error"}))
        if r < 0.14:
            data["customerId"] = f"{self.run}-ghost"
            return Sent(self._cmd("PlaceOrder", data), expect=frozenset({"not_found"}))
        if r < 0.16 and self.orders:
            o = rng.choice(list(self.orders.values()))  # an order id that exists, by its owner
            data.update(orderId=o.id, customerId=o.customer)
            return Sent(self._cmd("PlaceOrder", data, **self._as_customer(o.customer)),
                        expect=frozenset({"duplicate"}))
        if r < 0.18:
            del data["orderId"]  # the service generates the id
        if r < 0.20:
            return Sent(self._cmd("PlaceOrder", data, **who, expected_version=0))
        return Sent(self._cmd("PlaceOrder", data, **who))

    def _pick(self, statuses: tuple[str, ...]) -> _Order | None:
        pool = [o for o in list(self.orders.values())[-400:] if o.status in statuses]
        return self.rng.choice(pool) if pool else None

    def _transition(self, ctype: str) -> Sent:
        rng = self.rng
        wanted = {"ShipOrder": "placed", "DeliverOrder": "shipped", "CancelOrder": "placed",
                  "RefundOrder": "delivered"}[ctype]
        r = rng.random()
        expect = None
        if r < 0.04:
            o = None
            data: dict[str, Any] = {"orderId": f"{self.run}-o-none"}
            expect = frozenset({"not_found"})
        else:
            if r < 0.20:  # an order past the needed status: terminal or later states never come back
                later = {"placed": ("delivered", "cancelled", "refunded"), "shipped": ("cancelled", "refunded"),
                         "delivered": ("cancelled", "refunded")}[wanted]
                o = self._pick(later)
                expect = frozenset({"invalid_transition"}) if o else None
            else:
                o = self._pick((wanted,))
            o = o or rng.choice(list(self.orders.values()))
            data = {"orderId": o.id}
        if ctype == "ShipOrder":
            data["trackingNumber"] = f"TRK{rng.randint(10**6, 10**7)}"
        if ctype in ("CancelOrder", "RefundOrder"):
            data["reason"] = rng.choice(["customer request", "damaged", " too late ", "changed plans"])
        kw: dict[str, Any] = {}
        if ctype == "CancelOrder" and o is not None:
            if rng.random() < 0.6:
                kw = self._as_customer(o.customer)
            elif rng.random() < 0.1:
                other = rng.choice(list(self.customers.values()))
                if other.id != o.customer:
                    kw = self._as_customer(other.id)
                    expect = frozenset({"forbidden"})
        elif ctype != "CancelOrder" and rng.random() < 0.05:
            kw = {"user": o.customer if o else f"{self.run}-c0", "roles": ("customer",)}
            expect = frozenset({"forbidden"})
        if o is not None and expect is None and rng.random() < 0.12:
            if o.version >= 2 and rng.random() < 0.5:
                return Sent(self._cmd(ctype, data, expected_version=o.version - 1, **kw),
                            expect=frozenset({"concurrency_conflict"}))
            return Sent(self._cmd(ctype, data, expected_version=o.version, **kw))
        if ctype == "ShipOrder" and expect is None and rng.random() < 0.02:
            data["trackingNumber"] = "   "
            expect = frozenset({"validation_error"})
        return Sent(self._cmd(ctype, data, **kw), expect=expect)

    # -- replies update what the generator believes -----------------------------------

    def observe(self, s: Sent) -> None:
        if s.reply is None or s.resend_of is not None or s.reply.get("status") != "accepted":
            return
        self.accepted.append(s)
        cmd, d, agg = s.command, s.command["data"], s.reply.get("aggregateId")
        t = cmd["commandType"]
        if t == "RegisterCustomer":
            self.customers[agg] = _Customer(agg, d["name"].strip(), d["email"], 0)
        elif t == "AddProduct":
            self.products[agg] = _Product(agg, d["name"], 0, d["stock"])
        elif t == "RestockProduct" and agg in self.products:
            self.products[agg].version = s.reply["version"]
        elif t == "PlaceOrder":
            self.orders[agg] = _Order(agg, d["customerId"], 0)
        elif agg in self.orders:
            self.orders[agg].status = {"ShipOrder": "shipped", "DeliverOrder": "delivered",
                                       "CancelOrder": "cancelled", "RefundOrder": "refunded"}[t]
            self.orders[agg].version = s.reply["version"]


# ---- sending ---------------------------------------------------------------------------

@dataclass
class Progress:
    total: int
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    _waiters: list[tuple[float, asyncio.Event]] = field(default_factory=list)

    def reached(self, fraction: float) -> asyncio.Event:
        ev = asyncio.Event()
        self._waiters.append((fraction, ev))
        self._tick()
        return ev

    def _tick(self) -> None:
        for f, ev in self._waiters:
            if self.done >= f * self.total:
                ev.set()


Send = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def send_with_retry(send: Send, s: Sent, *, attempts: int = 4) -> None:
    """Sends (again, same commandId, so at most once applied) until a reply comes."""
    for _ in range(attempts):
        s.attempts += 1
        try:
            s.reply = await send(s.command)
            return
        except (RpcTimeout, asyncio.TimeoutError):
            continue


async def run_workload(client: Any, workload: Workload, total: int, *, batch: int = 48,
                       progress: Progress | None = None, timeout: float = 30.0,
                       send: Send | None = None) -> list[Sent]:
    """Sends the setup, then mixed batches, until `total` commands were sent. `send`
    defaults to `client.send_command`; pass another to spread commands over clients."""
    send = send or (lambda cmd: client.send_command(cmd, timeout=timeout))
    progress = progress or Progress(total)
    records: list[Sent] = []

    async def go(items: list[Sent]) -> None:
        await asyncio.gather(*(send_with_retry(send, s) for s in items))
        for s in items:
            workload.observe(s)
            records.append(s)
        progress.done = len(records)
        progress._tick()

    setup = workload.setup()
    for i in range(0, len(setup), batch):
        await go(setup[i:i + batch])
    while len(records) < total:
        await go(workload.batch(min(batch, total - len(records))))
    return records


# ---- checks and figures on the records -------------------------------------------------

def check_replies(records: list[Sent]) -> list[str]:
    """Problems visible from the replies alone: no reply; an outcome the contract forbids
    whatever the interleaving; a resend that did not get the first reply back."""
    problems = []
    first: dict[str, dict[str, Any]] = {}
    for s in records:
        cid = s.command["commandId"]
        if s.reply is None:
            problems.append(f"{s.type} {cid}: no reply after {s.attempts} attempts")
            continue
        if s.reply.get("commandId") != cid:
            problems.append(f"{s.type} {cid}: reply carries commandId {s.reply.get('commandId')}")
        if s.expect is not None and s.outcome not in s.expect:
            problems.append(f"{s.type} {cid}: {s.outcome}, expected one of {sorted(s.expect)}: {s.reply}")
        if cid in first and first[cid] != s.reply:
            problems.append(f"{s.type} {cid}: resend got {s.reply}, first reply was {first[cid]}")
        first.setdefault(cid, s.reply)
    return problems


def figures(records: list[Sent]) -> dict[str, Any]:
    """Commands sent / accepted / rejected per type, and the rejection codes."""
    per: dict[str, Counter] = defaultdict(Counter)
    for s in records:
        row = per[s.type]
        row["sent"] += 1
        if s.resend_of is not None:
            row["resent"] += 1
            continue
        row["accepted" if s.outcome == "accepted" else "rejected"] += 1
        if s.outcome != "accepted":
            row[s.outcome] += 1
    total = Counter()
    for row in per.values():
        total.update(row)
    return {"per_type": {t: dict(per[t]) for t in COMMAND_TYPES if t in per}, "total": dict(total)}


def format_figures(fig: dict[str, Any]) -> str:
    lines = [f"{'command':<17}{'sent':>6}{'accepted':>9}{'rejected':>9}{'resent':>7}  rejections"]
    for t, row in fig["per_type"].items():
        codes = ", ".join(f"{k} {v}" for k, v in sorted(row.items())
                          if k not in ("sent", "accepted", "rejected", "resent"))
        lines.append(f"{t:<17}{row.get('sent', 0):>6}{row.get('accepted', 0):>9}{row.get('rejected', 0):>9}"
                     f"{row.get('resent', 0):>7}  {codes}")
    tot = fig["total"]
    lines.append(f"{'total':<17}{tot.get('sent', 0):>6}{tot.get('accepted', 0):>9}{tot.get('rejected', 0):>9}"
                 f"{tot.get('resent', 0):>7}")
    return "\n".join(lines)
