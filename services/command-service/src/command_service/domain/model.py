"""The order domain: pure rules, no I/O. Every function returns the events it raises or
raises a DomainError carrying a contract error code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cqrs_shared.money import format_money


class DomainError(Exception):
    def __init__(self, code: str, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or []


@dataclass(frozen=True)
class Actor:
    user_id: str | None
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_customer(self) -> bool:
        return "customer" in self.roles


@dataclass
class Customer:
    id: str
    name: str
    email: str
    credit_limit_cents: int
    version: int = 0
    open_cents: int = 0  # sum of the customer's placed and shipped orders (as stored)


@dataclass
class Product:
    id: str
    name: str
    price_cents: int
    stock: int
    version: int = 0


@dataclass
class OrderLine:
    product_id: str
    name: str
    quantity: int
    unit_price_cents: int

    @property
    def line_total_cents(self) -> int:
        return self.unit_price_cents * self.quantity


@dataclass
class Order:
    id: str
    customer_id: str
    lines: list[OrderLine]
    shipping_address: dict[str, str]
    status: str = "placed"
    version: int = 0
    tracking_number: str | None = None

    @property
    def total_cents(self) -> int:
        return sum(line.line_total_cents for line in self.lines)


@dataclass(frozen=True)
class NewEvent:
    aggregate_type: str
    aggregate_id: str
    event_type: str
    version: int
    data: dict[str, Any] = field(default_factory=dict)


def _forbidden(message: str) -> DomainError:
    return DomainError("forbidden", message)


def authorize_self_service(actor: Actor) -> None:
    """Role check alone: admin, or customer acting for itself (checked later by ownership)."""
    if not (actor.is_admin or actor.is_customer):
        raise _forbidden("role admin or customer required")


def authorize_owner(actor: Actor, customer_id: str) -> None:
    if not actor.is_admin and actor.user_id != customer_id:
        raise _forbidden(f"user {actor.user_id!r} may not act for customer {customer_id!r}")


def authorize_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise _forbidden("role admin required")


def register_customer(customer: Customer, *, exists: bool) -> NewEvent:
    if exists:
        raise DomainError("duplicate", f"customer {customer.id} already exists")
    customer.version = 1
    return NewEvent("customer", customer.id, "CustomerRegistered", 1, {
        "customerId": customer.id, "name": customer.name, "email": customer.email,
        "creditLimit": format_money(customer.credit_limit_cents),
    })


def add_product(product: Product, *, exists: bool) -> NewEvent:
    if exists:
        raise DomainError("duplicate", f"product {product.id} already exists")
    product.version = 1
    return NewEvent("product", product.id, "ProductAdded", 1, {
        "productId": product.id, "name": product.name,
        "price": format_money(product.price_cents), "stock": product.stock,
    })


def place_order(
    order_id: str,
    customer: Customer,
    products: dict[str, Product],
    items: list[tuple[str, int]],
    shipping_address: dict[str, str],
    open_amount_cents: int,
    *,
    exists: bool,
) -> tuple[Order, NewEvent]:
    """Reserves stock on the given products (mutates them) and prices lines from the catalog."""
    if exists:
        raise DomainError("duplicate", f"order {order_id} already exists")
    short = [
        {"field": f"data.items[{i}].quantity",
         "message": f"product {pid}: {products[pid].stock} in stock, {qty} requested"}
        for i, (pid, qty) in enumerate(items) if products[pid].stock < qty
    ]
    if short:
        raise DomainError("insufficient_stock", "; ".join(d["message"] for d in short), short)
    lines = [OrderLine(pid, products[pid].name, qty, products[pid].price_cents) for pid, qty in items]
    order = Order(order_id, customer.id, lines, shipping_address, version=1)
    if open_amount_cents + order.total_cents > customer.credit_limit_cents:
        raise DomainError(
            "credit_limit_exceeded",
            f"customer {customer.id}: open amount {format_money(open_amount_cents)} + order "
            f"{format_money(order.total_cents)} exceeds credit limit {format_money(customer.credit_limit_cents)}",
        )
    for pid, qty in items:
        products[pid].stock -= qty
    event = NewEvent("order", order_id, "OrderPlaced", 1, {
        "orderId": order_id,
        "customerId": customer.id,
        "customer": {"id": customer.id, "name": customer.name, "email": customer.email},
        "items": [
            {"productId": ln.product_id, "name": ln.name, "quantity": ln.quantity,
             "unitPrice": format_money(ln.unit_price_cents),
             "lineTotal": format_money(ln.line_total_cents),
             "stock": products[ln.product_id].stock}
            for ln in lines
        ],
        "totalAmount": format_money(order.total_cents),
        "shippingAddress": shipping_address,
    })
    return order, event


def check_expected_version(expected: int | None, actual: int, what: str) -> None:
    if expected is not None and expected != actual:
        raise DomainError("concurrency_conflict", f"{what} is at version {actual}, expected {expected}")


def restock_product(product: Product, quantity: int) -> NewEvent:
    product.stock += quantity
    product.version += 1
    return NewEvent("product", product.id, "ProductRestocked", product.version, {
        "productId": product.id, "quantity": quantity, "stock": product.stock,
    })


# Allowed transitions: command -> (from status, to status, event type)
TRANSITIONS = {
    "ShipOrder": ("placed", "shipped", "OrderShipped"),
    "DeliverOrder": ("shipped", "delivered", "OrderDelivered"),
    "CancelOrder": ("placed", "cancelled", "OrderCancelled"),
    "RefundOrder": ("delivered", "refunded", "OrderRefunded"),
}


def transition(order: Order, command_type: str, data: dict[str, Any],
               products: dict[str, Product] | None = None) -> NewEvent:
    """Moves the order along placed -> shipped -> delivered -> refunded, or placed ->
    cancelled. Cancelling releases the reserved stock on `products`."""
    source, target, event_type = TRANSITIONS[command_type]
    if order.status != source:
        raise DomainError("invalid_transition",
                          f"order {order.id} is {order.status}; {command_type} needs status {source}")
    order.status = target
    order.version += 1
    payload: dict[str, Any] = {"orderId": order.id, "customerId": order.customer_id, **data}
    if command_type == "ShipOrder":
        order.tracking_number = data["trackingNumber"]
    if command_type == "CancelOrder":
        assert products is not None
        released = []
        for line in order.lines:
            product = products[line.product_id]
            product.stock += line.quantity
            released.append({"productId": line.product_id, "quantity": line.quantity, "stock": product.stock})
        payload["items"] = released
    return NewEvent("order", order.id, event_type, order.version, payload)
