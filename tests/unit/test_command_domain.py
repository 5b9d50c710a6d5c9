"""Pure domain and contract rules of the command side."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from command_service.domain import model
from command_service.domain.model import Actor, Customer, DomainError, Product
from cqrs_shared.contracts import commands as c
from cqrs_shared.contracts.errors import details_from
from cqrs_shared.money import average_money, format_money, parse_money

ADDRESS = {"street": "s", "city": "c", "state": "st", "zip": "1"}


@pytest.mark.parametrize("text,cents", [("10", 1000), ("10.5", 1050), ("29.99", 2999), ("0", 0), ("0.01", 1)])
def test_money_parses_to_cents(text, cents):
    assert parse_money(text) == cents


@pytest.mark.parametrize("bad", ["10.555", "-1", "1e3", " 1", "", "1.", ".5", 10])
def test_money_rejects_what_the_contract_forbids(bad):
    with pytest.raises(ValueError):
        parse_money(bad)


@given(st.integers(min_value=0, max_value=10**15))
def test_money_round_trips(cents):
    assert parse_money(format_money(cents)) == cents


def test_average_rounds_half_even_to_the_cent():
    assert average_money(1001, 2) == "5.00"   # 5.005 -> 5.00
    assert average_money(1003, 2) == "5.02"   # 5.015 -> 5.02
    assert average_money(0, 0) == "0.00"


def _products():
    return {"p1": Product("p1", "Pen", 250, 5, 1), "p2": Product("p2", "Ink", 99, 1, 1)}


def test_place_order_prices_from_catalog_and_reserves_stock():
    products = _products()
    order, event = model.place_order("o1", Customer("c1", "Ann", "a@x.io", 10_000), products,
                                     [("p1", 2), ("p2", 1)], ADDRESS, 0, exists=False)
    assert order.total_cents == 599
    assert products["p1"].stock == 3 and products["p2"].stock == 0
    assert event.event_type == "OrderPlaced" and event.version == 1
    assert event.data["totalAmount"] == "5.99"
    assert [i["lineTotal"] for i in event.data["items"]] == ["5.00", "0.99"]


def test_insufficient_stock_names_each_short_line_and_reserves_nothing():
    products = _products()
    with pytest.raises(DomainError) as err:
        model.place_order("o1", Customer("c1", "Ann", "a@x.io", 10_000), products,
                          [("p1", 6), ("p2", 2)], ADDRESS, 0, exists=False)
    assert err.value.code == "insufficient_stock"
    assert [d["field"] for d in err.value.details] == ["data.items[0].quantity", "data.items[1].quantity"]
    assert products["p1"].stock == 5


def test_credit_limit_counts_the_open_amount():
    with pytest.raises(DomainError) as err:
        model.place_order("o1", Customer("c1", "Ann", "a@x.io", 1000), _products(), [("p1", 2)], ADDRESS, 501,
                          exists=False)
    assert err.value.code == "credit_limit_exceeded"
    model.place_order("o1", Customer("c1", "Ann", "a@x.io", 1000), _products(), [("p1", 2)], ADDRESS, 500,
                      exists=False)


@given(stock=st.integers(0, 50), wants=st.lists(st.integers(1, 20), max_size=30))
def test_stock_never_goes_negative(stock, wants):
    product = Product("p", "P", 100, stock)
    accepted = 0
    for n, qty in enumerate(wants):
        try:
            model.place_order(f"o{n}", Customer("c", "C", "c@x.io", 10**12), {"p": product}, [("p", qty)],
                              ADDRESS, 0, exists=False)
            accepted += qty
        except DomainError as exc:
            assert exc.code == "insufficient_stock"
        assert product.stock >= 0
    assert product.stock == stock - accepted


def test_authorization_rules():
    model.authorize_self_service(Actor("c1", frozenset({"customer"})))
    model.authorize_owner(Actor("c1", frozenset({"customer"})), "c1")
    model.authorize_owner(Actor("root", frozenset({"admin"})), "c1")
    with pytest.raises(DomainError, match="role"):
        model.authorize_self_service(Actor("c1", frozenset()))
    with pytest.raises(DomainError):
        model.authorize_owner(Actor("c2", frozenset({"customer"})), "c1")
    with pytest.raises(DomainError):
        model.authorize_admin(Actor("c1", frozenset({"customer"})))


def test_validation_details_name_each_bad_field():
    with pytest.raises(ValidationError) as err:
        c.PlaceOrder.model_validate({"customerId": "", "items": [{"productId": "p", "quantity": 0},
                                                                {"productId": "q", "quantity": "2"}]})
    fields = {d["field"] for d in details_from(err.value, "data")}
    assert {"data.customerId", "data.items[0].quantity", "data.items[1].quantity", "data.shippingAddress"} <= fields


def test_place_order_rejects_repeated_products_and_too_many_items():
    item = {"productId": "p", "quantity": 1}
    with pytest.raises(ValidationError, match="distinct"):
        c.PlaceOrder.model_validate({"customerId": "c", "items": [item, item], "shippingAddress": ADDRESS})
    with pytest.raises(ValidationError):
        c.PlaceOrder.model_validate({"customerId": "c", "items": [{"productId": f"p{i}", "quantity": 1} for i in range(101)],
                                     "shippingAddress": ADDRESS})


def test_text_is_trimmed_and_emails_checked():
    ok = c.RegisterCustomer.model_validate({"name": "  Ann ", "email": "a@b.co", "creditLimit": "0"})
    assert ok.name == "Ann"
    for bad in ({"name": "   ", "email": "a@b.co", "creditLimit": "1"},
                {"name": "A", "email": "not-an-email", "creditLimit": "1"},
                {"name": "A" * 201, "email": "a@b.co", "creditLimit": "1"}):
        with pytest.raises(ValidationError):
            c.RegisterCustomer.model_validate(bad)
