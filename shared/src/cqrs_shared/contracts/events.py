"""Event types and the shape of their `data` (event-carried state: a projector needs no
other source than the events themselves)."""

from __future__ import annotations

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
