"""The shared contract models are the single source of the wire shapes: the command service
emits exactly the event data they describe, and the query service validates with the
parameter models that clients use."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from command_service.domain import model
from command_service.domain.model import Customer, Order, OrderLine, Product
from cqrs_shared.contracts import commands as c
from cqrs_shared.contracts.events import EVENT_DATA, EVENT_TYPES
from cqrs_shared.contracts.queries import QUERIES, RESULTS, parameters_of
from cqrs_shared.topology import QUERY_TYPES
from query_service.domain import queries as query_domain

ADDRESS = {"street": "1 Main St", "city": "Town", "state": "TS", "zip": "1"}


def _emitted_events() -> list[model.NewEvent]:
    """One event of each type, produced by the command service's domain functions."""
    ada = Customer("c1", "Ada", "ada@example.com", 50_000)
    pen = Product("pen", "Pen", 250, 10)
    events = [model.register_customer(ada, exists=False), model.add_product(pen, exists=False),
              model.restock_product(pen, 5)]
    order, placed = model.place_order("o1", ada, {"pen": pen}, [("pen", 2)], ADDRESS, 0, exists=False)
    events.append(placed)
    events.append(model.transition(order, "ShipOrder", {"trackingNumber": "T1"}))
    events.append(model.transition(order, "DeliverOrder", {}))
    events.append(model.transition(order, "RefundOrder", {"reason": "broken"}))
    other = Order("o2", "c1", [OrderLine("pen", "Pen", 1, 250)], ADDRESS, version=1)
    events.append(model.transition(other, "CancelOrder", {"reason": "changed my mind"}, {"pen": pen}))
    return events


def _fields(m) -> set[str]:
    return set(m.model_fields)


def test_every_event_type_has_a_data_model():
    assert set(EVENT_DATA) == {t for types in EVENT_TYPES.values() for t in types}


def test_the_command_service_emits_exactly_the_documented_event_data():
    events = _emitted_events()
    assert {e.event_type for e in events} == set(EVENT_DATA)
    for e in events:
        data_model = EVENT_DATA[e.event_type]
        parsed = data_model.model_validate(e.data)  # types and required fields
        assert set(e.data) == _fields(data_model), e.event_type  # nothing undocumented either
        for name, value in e.data.items():  # nested objects: no undocumented fields
            sub = getattr(parsed, name)
            if isinstance(value, dict):
                assert set(value) == _fields(type(sub)), f"{e.event_type}.{name}"
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                assert set(value[0]) == _fields(type(sub[0])), f"{e.event_type}.{name}[]"


def test_query_service_validates_with_the_shared_parameter_models():
    assert tuple(QUERIES) == QUERY_TYPES
    assert set(RESULTS) == set(QUERIES)
    for name, model in QUERIES.items():  # the service validates with the same classes the client uses
        assert getattr(query_domain, name) is model


@pytest.mark.parametrize("query,params,field", [
    ("GetOrderDetails", {"orderId": "o1", "includeHistory": "yes"}, "includeHistory"),
    ("ListCustomerOrders", {"customerId": "c1", "status": "lost"}, "status"),
    ("ListCustomerOrders", {"customerId": "c1", "page": "2"}, "page"),
    ("SearchOrders", {"dateFrom": "2026-02-30"}, "dateFrom"),
    ("SearchOrders", {"minAmount": "1.234"}, "minAmount"),
    ("SearchOrders", {"colour": "red"}, "colour"),
    ("GetDailyOrderMetrics", {"dateFrom": "2026-01-01"}, "dateTo"),
    ("GetPopularProducts", {"limit": 101}, "limit"),
])
def test_bad_parameters_are_rejected_naming_the_field(query, params, field):
    with pytest.raises(ValidationError) as exc:
        QUERIES[query].model_validate(params)
    assert field in {str(e["loc"][0]) for e in exc.value.errors() if e["loc"]}


def test_date_range_rules():
    with pytest.raises(ValidationError, match="must not be after"):
        QUERIES["GetDailyOrderMetrics"].model_validate({"dateFrom": "2026-02-01", "dateTo": "2026-01-01"})
    with pytest.raises(ValidationError, match="366"):
        QUERIES["SearchOrders"].model_validate({"dateFrom": "2025-01-01", "dateTo": "2026-01-03"})
    ok = QUERIES["SearchOrders"].model_validate({"dateFrom": "2025-01-01", "dateTo": "2026-01-02", "status": "placed"})
    assert parameters_of(ok) == {"dateFrom": "2025-01-01", "dateTo": "2026-01-02", "status": "placed"}


def test_typed_command_data_round_trips_to_the_wire_shape():
    order = c.PlaceOrder(customerId="c1", items=[c.OrderItem(productId="p", quantity=2)],
                         shippingAddress=c.Address(**ADDRESS))
    wire = order.model_dump(mode="json", exclude_none=True)
    assert wire == {"customerId": "c1", "items": [{"productId": "p", "quantity": 2}], "shippingAddress": ADDRESS}
    assert c.PlaceOrder.model_validate(wire) == order


def test_every_error_code_has_a_typed_client_exception():
    from cqrs_client.errors import ERRORS_BY_CODE
    from cqrs_shared.contracts import errors

    codes = {v for k, v in vars(errors).items() if k.isupper() and isinstance(v, str)}
    assert codes == set(ERRORS_BY_CODE)


def test_protocol_doc_names_every_type_parameter_and_error_code():
    """docs/protocol.md must be enough for a client in another language: it names every
    command and its data fields, every query and its parameters, every event and error code."""
    import re
    from pathlib import Path

    from cqrs_shared.contracts import errors
    from cqrs_shared.contracts.events import EVENT_DATA

    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (\w+) \| ([^|]*) \|", text, re.M)}
    for name, model in [*c.COMMANDS.items(), *QUERIES.items(), *EVENT_DATA.items()]:
        assert name in rows, f"{name} has no row in docs/protocol.md"
        for field in model.model_fields:
            assert re.search(rf"\b{field}\b", rows[name]), f"{name}.{field} missing from its row in docs/protocol.md"
    for code in (v for k, v in vars(errors).items() if k.isupper() and isinstance(v, str)):
        assert f"`{code}`" in text, code
