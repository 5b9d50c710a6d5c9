"""Event types and the shape of their `data` (event-carried state: a projector needs no
other source than the events themselves)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

# aggregateType -> event types. Routing key on cqrs.events: "<aggregateType>.<eventType>".
EVENT_TYPES: dict[str, tuple[str, ...]] = {
    "customer": ("CustomerRegistered",),
    "product": ("ProductAdded", "ProductRestocked"),
    "order": ("OrderPlaced", "OrderShipped", "OrderDelivered", "OrderCancelled", "OrderRefunded"),
}

# data fields per event (money as two-decimal strings):
# CustomerRegistered: customerId, name, email, creditLimit
# ProductAdded:       productId, name, price, stock
# ProductRestocked:   productId, quantity, stock (the product's unreserved stock after it)
# OrderPlaced:        orderId, customerId, customer{id,name,email},
#                     items[{productId, name, quantity, unitPrice, lineTotal, stock}],
#                     totalAmount, shippingAddress{street,city,state,zip}
#                     (items[].stock is the product's unreserved stock after the reservation)
# OrderShipped:       orderId, customerId, trackingNumber
# OrderDelivered:     orderId, customerId
# OrderCancelled:     orderId, customerId, reason, items[{productId, quantity, stock}]
# OrderRefunded:      orderId, customerId, reason


# The same shapes as pydantic models: the single source for docs/asyncapi.yaml and for any
# Python consumer that wants typed access. Unknown fields are allowed (a newer producer may
# add some); tests/unit/test_contract_models.py checks that the command service emits
# exactly these fields.
MoneyOut = Annotated[str, Field(pattern=r"^\d+\.\d{2}$", description="money, exactly two decimals")]


class _EventData(BaseModel):
    model_config = ConfigDict(extra="allow")


class CustomerRegisteredData(_EventData):
    customerId: str
    name: str
    email: str
    creditLimit: MoneyOut


class ProductAddedData(_EventData):
    productId: str
    name: str
    price: MoneyOut
    stock: StrictInt


class ProductRestockedData(_EventData):
    productId: str
    quantity: StrictInt
    stock: StrictInt = Field(description="the product's unreserved stock after the restock")


class OrderCustomer(_EventData):
    id: str
    name: str
    email: str


class PlacedItem(_EventData):
    productId: str
    name: str
    quantity: StrictInt
    unitPrice: MoneyOut
    lineTotal: MoneyOut
    stock: StrictInt = Field(description="the product's unreserved stock after the reservation")


class DeliveryAddress(_EventData):
    street: str
    city: str
    state: str
    zip: str


class OrderPlacedData(_EventData):
    orderId: str
    customerId: str
    customer: OrderCustomer
    items: list[PlacedItem]
    totalAmount: MoneyOut
    shippingAddress: DeliveryAddress


class OrderShippedData(_EventData):
    orderId: str
    customerId: str
    trackingNumber: str


class OrderDeliveredData(_EventData):
    orderId: str
    customerId: str


class ReleasedItem(_EventData):
    productId: str
    quantity: StrictInt
    stock: StrictInt = Field(description="the product's unreserved stock after the release")


class OrderCancelledData(_EventData):
    orderId: str
    customerId: str
    reason: str
    items: list[ReleasedItem] = Field(description="the released quantities")


class OrderRefundedData(_EventData):
    orderId: str
    customerId: str
    reason: str


# eventType -> model of its `data`
EVENT_DATA: dict[str, type[_EventData]] = {
    "CustomerRegistered": CustomerRegisteredData,
    "ProductAdded": ProductAddedData,
    "ProductRestocked": ProductRestockedData,
    "OrderPlaced": OrderPlacedData,
    "OrderShipped": OrderShippedData,
    "OrderDelivered": OrderDeliveredData,
    "OrderCancelled": OrderCancelledData,
    "OrderRefunded": OrderRefundedData,
}
