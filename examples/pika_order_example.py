#!/usr/bin/env python3
"""A plain-AMQP client of the order system, using only `pika` (no project code).

It follows ../shared/spec/contract.md: registers a customer, adds a product, places an order
as that customer, then reads the order back with GetOrderDetails and minPosition (so the
view already contains the order). Each reply is printed as one JSON line.

    AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ python examples/pika_order_example.py
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

import pika

REPLY_TO = "amq.rabbitmq.reply-to"  # RabbitMQ direct reply-to: no reply queue to declare


class Rpc:
    def __init__(self, url: str) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        self.replies: dict[str, dict] = {}
        # consume direct reply-to before publishing (no_ack is required by RabbitMQ)
        self.ch.basic_consume(REPLY_TO, self._on_reply, auto_ack=True)

    def _on_reply(self, ch, method, props, body) -> None:
        self.replies[props.correlation_id] = json.loads(body)

    def call(self, exchange: str, routing_key: str, body: dict, timeout: float = 15.0) -> dict:
        corr = str(uuid.uuid4())
        self.ch.basic_publish(
            exchange=exchange, routing_key=routing_key, body=json.dumps(body).encode(),
            properties=pika.BasicProperties(content_type="application/json", correlation_id=corr,
                                            reply_to=REPLY_TO),
        )
        deadline = time.monotonic() + timeout
        while corr not in self.replies:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply to {routing_key} within {timeout}s")
            self.conn.process_data_events(time_limit=0.1)
        return self.replies.pop(corr)

    def command(self, command_type: str, data: dict, user_id: str, roles: list[str]) -> dict:
        return self.call("cqrs.commands", command_type, {
            "commandId": str(uuid.uuid4()), "commandType": command_type, "userId": user_id,
            "data": data, "metadata": {"clientId": "pika-example", "roles": roles}})

    def query(self, query_type: str, parameters: dict, min_position: int | None = None) -> dict:
        body = {"queryId": str(uuid.uuid4()), "queryType": query_type, "parameters": parameters}
        if min_position is not None:
            body["minPosition"] = min_position
        return self.call("cqrs.queries", query_type, body)

    def close(self) -> None:
        self.conn.close()


def show(label: str, reply: dict) -> dict:
    print(f"{label}: {json.dumps(reply)}", flush=True)
    return reply


def main() -> int:
    url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    try:
        rpc = Rpc(url)
    except pika.exceptions.AMQPError as exc:
        print(f"error: cannot connect to RabbitMQ at AMQP_URL: {exc!r}", file=sys.stderr)
        return 2
    run = uuid.uuid4().hex[:8]
    customer_id, product_id, order_id = f"cust-{run}", f"prod-{run}", f"order-{run}"
    try:
        r = show("RegisterCustomer", rpc.command("RegisterCustomer", {
            "customerId": customer_id, "name": "Ada Lovelace", "email": "ada@example.com",
            "creditLimit": "500"}, user_id="admin", roles=["admin"]))
        if r["status"] != "accepted":
            return 1
        r = show("AddProduct", rpc.command("AddProduct", {
            "productId": product_id, "name": "Analytical Engine manual", "price": "12.50", "stock": 10},
            user_id="admin", roles=["admin"]))
        if r["status"] != "accepted":
            return 1
        # the customer orders for itself (self-service: userId == customerId, role customer)
        placed = show("PlaceOrder", rpc.command("PlaceOrder", {
            "orderId": order_id, "customerId": customer_id,
            "items": [{"productId": product_id, "quantity": 2}],
            "shippingAddress": {"street": "12 St James's Sq", "city": "London", "state": "LDN", "zip": "SW1Y"}},
            user_id=customer_id, roles=["customer"]))
        if placed["status"] != "accepted":
            return 1
        # read-your-writes: wait until the views include the order's event
        r = show("GetOrderDetails", rpc.query("GetOrderDetails", {"orderId": order_id},
                                              min_position=placed["position"]))
        return 0 if r["status"] == "ok" else 1
    finally:
        rpc.close()


if __name__ == "__main__":
    sys.exit(main())
