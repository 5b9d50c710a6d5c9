"""A short scenario through the running system: register a customer, add two products,
place an order, then read the order view with read-your-writes (minPosition)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

from cqrs_shared.messaging.rpc import RpcClient


def show(title: str, reply: dict) -> None:
    print(f"\n== {title}")
    print(json.dumps(reply, indent=2))


async def main() -> int:
    client = await RpcClient.connect(os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    run = uuid.uuid4().hex[:6]
    admin = {"userId": "demo-admin", "metadata": {"roles": ["admin"], "clientId": "demo"}}
    try:
        cust = await client.send_command({"commandType": "RegisterCustomer", **admin, "data": {
            "customerId": f"cust-{run}", "name": "Ada Lovelace", "email": "ada@example.com", "creditLimit": "500.00"}})
        show("RegisterCustomer", cust)
        for pid, name, price, stock in (("pen", "Fountain pen", "29.99", 10), ("ink", "Ink bottle", "4.5", 40)):
            show("AddProduct", await client.send_command({"commandType": "AddProduct", **admin, "data": {
                "productId": f"{pid}-{run}", "name": name, "price": price, "stock": stock}}))
        order = await client.send_command({
            "commandType": "PlaceOrder", "userId": f"cust-{run}",
            "metadata": {"roles": ["customer"], "clientId": "demo"},
            "data": {"orderId": f"order-{run}", "customerId": f"cust-{run}",
                     "items": [{"productId": f"pen-{run}", "quantity": 2}, {"productId": f"ink-{run}", "quantity": 3}],
                     "shippingAddress": {"street": "12 St James's Sq", "city": "London", "state": "LDN", "zip": "SW1Y 4JH"}}})
        show("PlaceOrder", order)
        if order["status"] != "accepted":
            return 1
        view = await client.query({"queryType": "GetOrderDetails", "minPosition": order["position"],
                                   "parameters": {"orderId": order["aggregateId"], "includeHistory": True}})
        show("GetOrderDetails (read-your-writes at position %s)" % order["position"], view)
        ok = view["status"] == "ok" and view["result"]["totalAmount"] == "73.48"
        print("\ndemo", "OK: command -> event -> view -> query" if ok else "FAILED")
        return 0 if ok else 1
    finally:
        await client.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
