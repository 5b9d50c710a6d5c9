"""The `data` of every command in the contract."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StringConstraints, field_validator

from cqrs_shared.money import MONEY_RE, parse_money

from .envelopes import Id


def _text(max_len: int):
    return Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=max_len)]


def _money(v: str) -> str:
    parse_money(v)
    return v


Money = Annotated[str, AfterValidator(_money),
                  Field(json_schema_extra={"pattern": MONEY_RE.pattern,
                                           "description": "money: a decimal string, at most two decimals"})]
Name = _text(200)
Email = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=200,
                                         pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


class _Data(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class RegisterCustomer(_Data):
    """Registers a customer. email valid; creditLimit >= 0; customerId new (else duplicate).
    Role admin, or customer with userId = customerId. Emits CustomerRegistered."""

    customerId: Id | None = None
    name: Name
    email: Email
    creditLimit: Money


class AddProduct(_Data):
    """Adds a product. price > 0; stock >= 0; productId new (else duplicate). Role admin.
    Emits ProductAdded."""

    productId: Id | None = None
    name: Name
    price: Money
    stock: Annotated[StrictInt, Field(ge=0)]

    @field_validator("price")
    @classmethod
    def _positive(cls, v: str) -> str:
        if parse_money(v) <= 0:
            raise ValueError("price must be greater than 0")
        return v


class RestockProduct(_Data):
    """Adds stock to a product. quantity > 0; expectedVersion is the product's version. Role
    admin. Emits ProductRestocked."""

    productId: Id
    quantity: Annotated[StrictInt, Field(gt=0)]


class OrderItem(_Data):
    productId: Id
    quantity: Annotated[StrictInt, Field(ge=1, le=1000)]


class Address(_Data):
    street: Name
    city: Name
    state: Name
    zip: _text(20)


class PlaceOrder(_Data):
    """Places an order and reserves its stock. Customer and products exist; each product has
    the stock; unit price = the product's price now; the customer's open amount + this total
    <= creditLimit. Role admin, or customer with userId = customerId. Emits OrderPlaced."""

    orderId: Id | None = None
    customerId: Id
    items: Annotated[list[OrderItem], Field(min_length=1, max_length=100)]
    shippingAddress: Address

    @field_validator("items")
    @classmethod
    def _distinct(cls, items: list[OrderItem]) -> list[OrderItem]:
        ids = [i.productId for i in items]
        if len(set(ids)) != len(ids):
            raise ValueError("productIds must be distinct")
        return items


class ShipOrder(_Data):
    """Ships an order in status placed. Role admin. Emits OrderShipped."""

    orderId: Id
    trackingNumber: _text(100)


class DeliverOrder(_Data):
    """Marks a shipped order delivered. Role admin. Emits OrderDelivered."""

    orderId: Id


class CancelOrder(_Data):
    """Cancels an order in status placed and releases its stock. Role admin, or the order's
    customer. Emits OrderCancelled."""

    orderId: Id
    reason: _text(500)


class RefundOrder(_Data):
    """Refunds a delivered order (stock is not returned). Role admin. Emits OrderRefunded."""

    orderId: Id
    reason: _text(500)


COMMANDS: dict[str, type[_Data]] = {
    m.__name__: m
    for m in (RegisterCustomer, AddProduct, RestockProduct, PlaceOrder, ShipOrder,
              DeliverOrder, CancelOrder, RefundOrder)
}
