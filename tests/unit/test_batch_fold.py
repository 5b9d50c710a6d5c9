"""Folding a batch of events in memory (projector_service.domain.fold): one write per order,
the same document as applying the events one by one, duplicates done, gaps blocked."""

from __future__ import annotations

from cqrs_shared.contracts.envelopes import EventEnvelope
from projector_service.domain.fold import fold_order, fold_references
from projector_service.domain.orders import apply_order_event

ADDR = {"street": "1 Rd", "city": "C", "state": "S", "zip": "1"}


def ev(etype: str, version: int, position: int, data: dict, agg: str = "o1", atype: str = "order") -> EventEnvelope:
    return EventEnvelope(eventId=f"e{position}", eventType=etype, aggregateId=agg, aggregateType=atype,
                         version=version, position=position, timestamp=f"2026-01-01T00:00:{position:02d}.000Z",
                         data=data, metadata={"userId": "u"})


PLACED = ev("OrderPlaced", 1, 3, {"orderId": "o1", "customerId": "c1", "customer": {"id": "c1", "name": "A"},
                                  "items": [{"productId": "p1", "name": "Pen", "quantity": 2, "unitPrice": "1.50",
                                             "lineTotal": "3.00", "stock": 8}],
                                  "totalAmount": "3.00", "shippingAddress": ADDR})
SHIPPED = ev("OrderShipped", 2, 5, {"orderId": "o1", "customerId": "c1", "trackingNumber": "T"})
DELIVERED = ev("OrderDelivered", 3, 9, {"orderId": "o1", "customerId": "c1"})


def test_several_versions_fold_into_one_write_equal_to_one_by_one():
    one_by_one = None
    for e in (PLACED, SHIPPED, DELIVERED):
        one_by_one = apply_order_event(one_by_one, e)
    f = fold_order(None, [DELIVERED, PLACED, SHIPPED, SHIPPED])  # any order, with a redelivery
    assert f.write == one_by_one and f.expected_version == 0
    assert sorted(e.position for e in f.done) == [3, 5, 5, 9] and not f.blocked and not f.invalid


def test_versions_already_stored_are_done_without_a_write():
    stored = apply_order_event(apply_order_event(None, PLACED), SHIPPED)
    f = fold_order(stored, [PLACED, SHIPPED])
    assert f.write is None and [e.position for e in f.done] == [3, 5]
    f = fold_order(stored, [SHIPPED, DELIVERED])
    assert f.expected_version == 2 and f.write["status"] == "delivered" and f.write["version"] == 3


def test_a_gap_blocks_the_rest_of_the_aggregate():
    f = fold_order(None, [SHIPPED, DELIVERED])
    assert f.write is None and not f.done and [e.version for e in f.blocked] == [2, 3]
    f = fold_order(None, [PLACED, DELIVERED])
    assert f.write["version"] == 1 and [e.version for e in f.blocked] == [3]


def test_an_invalid_event_is_reported_and_blocks_its_successors():
    bad = ev("OrderPlaced", 1, 3, {"orderId": "o1", "customerId": "c1"})  # no items
    f = fold_order(None, [bad, SHIPPED])
    assert f.write is None and [e.position for e, _ in f.invalid] == [3] and [e.version for e in f.blocked] == [2]


def test_references_keep_the_stock_of_the_highest_position_and_merge_product_info():
    added = ev("ProductAdded", 1, 1, {"productId": "p1", "name": "Pen", "price": "1.50", "stock": 10},
               agg="p1", atype="product")
    restocked = ev("ProductRestocked", 2, 7, {"productId": "p1", "quantity": 5, "stock": 13}, agg="p1",
                   atype="product")
    reg = ev("CustomerRegistered", 1, 2, {"customerId": "c1", "name": "A", "email": "a@x.io"}, agg="c1",
             atype="customer")
    r = fold_references([restocked, PLACED, added, reg])
    assert r.product_stock == {"p1": (13, 7)}
    assert r.product_info == {"p1": ({"name": "Pen", "price": "1.50"}, 2)}
    assert r.customers == {"c1": {"customerId": "c1", "name": "A", "email": "a@x.io"}}


def test_pointer_targets_newest_first_without_a_dead_build_or_an_expired_retirement():
    from datetime import datetime, timedelta, timezone

    from projector_service.application.ports import Pointer

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert Pointer().target_names(now) == [("", True)]
    building = Pointer(live="", building="r1", heartbeat_at=now - timedelta(seconds=5))
    assert building.target_names(now) == [("r1", False), ("", True)]
    from dataclasses import replace
    assert replace(building, strict=True).target_names(now) == [("r1", True), ("", True)]
    assert replace(building, heartbeat_at=now - timedelta(seconds=31)).target_names(now) == [("", True)]
    switched = Pointer(live="r1", retiring="", retire_until=now + timedelta(seconds=1))
    assert switched.target_names(now) == [("r1", True), ("", True)]
    assert switched.target_names(now + timedelta(seconds=2)) == [("r1", True)]


def test_reference_writes_merged_across_batches_equal_one_fold_of_all_in_any_order():
    added = ev("ProductAdded", 1, 1, {"productId": "p1", "name": "Pen", "price": "1.50", "stock": 10},
               agg="p1", atype="product")
    reg = ev("CustomerRegistered", 1, 2, {"customerId": "c1", "name": "A", "email": "a@x.io"}, agg="c1",
             atype="customer")
    restocked = ev("ProductRestocked", 2, 7, {"productId": "p1", "quantity": 5, "stock": 13}, agg="p1",
                   atype="product")
    everything = fold_references([added, reg, PLACED, restocked])
    for first, second in (([added, reg], [PLACED, restocked]), ([PLACED, restocked], [added, reg])):
        merged = fold_references(first)
        merged.merge(fold_references(second))
        assert merged == everything
    assert len(everything) == 2  # one customer, one product
