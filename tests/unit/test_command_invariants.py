"""Property-based tests of the domain invariants over random command sequences."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from command_service.domain import model
from command_service.domain.model import Customer, DomainError, Product

ADDRESS = {"street": "s", "city": "c", "state": "st", "zip": "1"}
STATUS_OPEN = {"placed", "shipped"}

ops = st.lists(
    st.one_of(
        st.tuples(st.just("place"), st.integers(0, 2), st.integers(1, 8)),
        st.tuples(st.just("restock"), st.integers(0, 2), st.integers(1, 5)),
        st.tuples(st.sampled_from(["ShipOrder", "DeliverOrder", "CancelOrder", "RefundOrder"]),
                  st.integers(0, 30), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=ops, limit=st.integers(0, 5000), stocks=st.lists(st.integers(0, 10), min_size=3, max_size=3))
def test_stock_open_amount_and_versions(ops, limit, stocks):
    customer = Customer("c", "C", "c@x.io", limit)
    products = {f"p{i}": Product(f"p{i}", "P", 100 + i * 37, s, 1) for i, s in enumerate(stocks)}
    added = dict(zip(products, stocks))
    orders: list[model.Order] = []
    versions: dict[str, list[int]] = {}
    for op in ops:
        try:
            if op[0] == "place":
                pid = f"p{op[1]}"
                open_amount = sum(o.total_cents for o in orders if o.status in STATUS_OPEN)
                order, ev = model.place_order(f"o{len(orders)}", customer, products, [(pid, op[2])], ADDRESS,
                                              open_amount, exists=False)
                orders.append(order)
                versions[order.id] = [ev.version]
            elif op[0] == "restock":
                pid = f"p{op[1]}"
                ev = model.restock_product(products[pid], op[2])
                added[pid] += op[2]
            elif orders:
                order = orders[op[1] % len(orders)]
                extra = {"trackingNumber": "T"} if op[0] == "ShipOrder" else {}
                ev = model.transition(order, op[0], extra, products)
                versions[order.id].append(ev.version)
        except DomainError as exc:
            assert exc.code in {"insufficient_stock", "credit_limit_exceeded", "invalid_transition"}
        # invariants after every step
        assert all(p.stock >= 0 for p in products.values())
        assert sum(o.total_cents for o in orders if o.status in STATUS_OPEN) <= customer.credit_limit_cents
        for pid, p in products.items():
            reserved = sum(ln.quantity for o in orders if o.status != "cancelled" for ln in o.lines if ln.product_id == pid)
            assert p.stock == added[pid] - reserved  # stock = added + restocked - reserved + released
    for vs in versions.values():
        assert vs == list(range(1, len(vs) + 1))  # gap-free per aggregate
