"""Command handling: parse and validate the request, check idempotency, run the business
rules in one transaction that also appends the events (the outbox), store the reply."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from command_service.application.group_commit import GroupCommit
from command_service.application.ports import CommandStore, ReplyExists, Tx
from command_service.domain import model
from command_service.domain.model import Actor, Customer, DomainError, NewEvent, Product
from cqrs_shared import logs
from cqrs_shared.contracts import commands as c
from cqrs_shared.contracts.envelopes import MAX_BODY_BYTES, CommandEnvelope
from cqrs_shared.contracts.errors import VALIDATION_ERROR, details_from, error_body
from cqrs_shared.money import parse_money
from cqrs_shared import strict_json

log = logging.getLogger("command_service")

CREATING = {"RegisterCustomer", "AddProduct", "PlaceOrder"}


def rejected(command_id: str | None, code: str, message: str, details=None, aggregate_id: str | None = None) -> dict[str, Any]:
    return {"commandId": command_id, "status": "rejected", "aggregateId": aggregate_id,
            "version": None, "position": None, "error": error_body(code, message, details)}


class _Invalid(Exception):
    def __init__(self, message: str, details: list[dict[str, str]], aggregate_id: str | None = None) -> None:
        super().__init__(message)
        self.message, self.details, self.aggregate_id = message, details, aggregate_id


def _envelope(cmd: CommandEnvelope, ev: NewEvent) -> dict[str, Any]:
    """The event as published; the store sets `position` and `timestamp` when it appends it."""
    return {
        "eventId": str(uuid.uuid4()), "eventType": ev.event_type, "aggregateId": ev.aggregate_id,
        "aggregateType": ev.aggregate_type, "version": ev.version, "position": None,
        "timestamp": None, "correlationId": cmd.metadata.correlationId or cmd.commandId,
        "causationId": cmd.commandId, "schemaVersion": 1, "data": ev.data,
        "metadata": {"userId": cmd.userId},
    }


def _unstorable(value: Any) -> bool:
    """True when some text in `value` cannot be stored in PostgreSQL (U+0000, or a lone
    surrogate from a `\\ud800` escape), or when it is nested too deeply to look at."""
    try:
        if isinstance(value, str):
            value.encode("utf-8")
            return "\x00" in value
        if isinstance(value, dict):
            return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
        if isinstance(value, list):
            return any(_unstorable(v) for v in value)
    except (UnicodeEncodeError, RecursionError):
        return True
    return False


def _decode(body: bytes) -> dict[str, Any] | None:
    """The request as a JSON object, or None (too large, not JSON, not an object, text that
    cannot be stored). Decoded once per command: for the rules, the idempotency key and the
    audit row."""
    if len(body) > MAX_BODY_BYTES:
        return None
    try:
        raw = strict_json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if b"\\u" in body and _unstorable(raw):  # only \u escapes can carry such text
        return None
    return raw if isinstance(raw, dict) else None


class CommandService:
    def __init__(self, *, store: CommandStore, group_max: int = 32) -> None:
        """group_max: at most this many commands in one group transaction (GroupCommit);
        1 runs every command in a transaction of its own."""
        self._store = store
        self.group = GroupCommit(store, group_max) if group_max > 1 else None
        self._handlers: dict[str, Callable[[CommandEnvelope, Any, Actor, Tx], Awaitable[tuple[list[NewEvent], Callable[[Tx], None]]]]] = {
            "RegisterCustomer": self._register_customer,
            "AddProduct": self._add_product,
            "PlaceOrder": self._place_order,
            "RestockProduct": self._restock_product,
            "ShipOrder": self._order_transition,
            "DeliverOrder": self._order_transition,
            "CancelOrder": self._order_transition,
            "RefundOrder": self._order_transition,
        }

    async def handle(self, body: bytes, routing_key: str, content_type: str | None = None) -> dict[str, Any]:
        """Returns the reply for one request, and records it in the audit trail. Never
        raises for bad input."""
        request = _decode(body)
        reply, audited = await self._handle(body, request, routing_key, content_type)
        if not audited:
            await self._store.audit(request, reply)
        error = reply.get("error") or {}
        log.info("command %s", reply["status"], extra={"status": reply["status"], "errorCode": error.get("code"),
                                                        "aggregateId": reply.get("aggregateId"),
                                                        "position": reply.get("position")})
        return reply

    async def _handle(self, body: bytes, request: dict[str, Any] | None, routing_key: str,
                      content_type: str | None) -> tuple[dict[str, Any], bool]:
        """The reply, and whether its audit row was already written (in the same
        transaction as the stored reply, which saves a commit per command)."""
        command_id: str | None = None
        try:
            if content_type and content_type.split(";")[0].strip().lower() != "application/json":
                raise _Invalid(f"content type {content_type!r} is not application/json",
                               [{"field": "content_type", "message": "must be application/json"}])
            cmd, data = self._parse(body, request, routing_key)
            command_id = cmd.commandId
            logs.bind(commandId=cmd.commandId, commandType=cmd.commandType, userId=cmd.userId,
                      correlationId=cmd.metadata.correlationId or cmd.commandId, causationId=cmd.commandId)
        except _Invalid as exc:
            return await self._reply_invalid(request, exc)
        # No lookup of a stored reply first (a round trip per command): the reply's primary
        # key decides. A repeated commandId runs the rules again, and then either fails at
        # append (ReplyExists: everything rolls back, the stored reply is returned) or is
        # rejected, and save_reply keeps and returns the first reply.
        handler = self._handlers[cmd.commandType]
        actor = Actor(cmd.userId, frozenset(cmd.metadata.roles))

        async def work(tx: Tx) -> dict[str, Any]:
            events, persist = await handler(cmd, data, actor, tx)
            persist(tx)  # buffered: written by append, under the position counter
            reply = {"commandId": cmd.commandId, "status": "accepted",
                     "aggregateId": events[-1].aggregate_id, "version": events[-1].version,
                     "position": None, "error": None}
            reply["position"] = await tx.append([_envelope(cmd, ev) for ev in events], cmd.commandId,
                                                cmd.commandType, reply, request)
            return reply

        try:
            if self.group is not None:
                prefetch = (data.customerId, [i.productId for i in data.items], data.orderId) \
                    if cmd.commandType == "PlaceOrder" else None
                return await self.group.run(work, prefetch), True
            return await self._store.in_transaction(work), True
        except ReplyExists:
            return await self._store.stored_reply(command_id), False  # seen before, or a concurrent twin won
        except DomainError as exc:
            reply = rejected(command_id, exc.code, exc.message, exc.details, self._target_id(cmd, data))
            return await self._store.save_reply(command_id, cmd.commandType, reply, request), True

    # -- parsing -------------------------------------------------------------------------

    def _parse(self, body: bytes, request: dict[str, Any] | None, routing_key: str) -> tuple[CommandEnvelope, Any]:
        """`request` is the body already decoded by `_decode` (None when it is not a JSON
        object of at most 1 MiB; the body is looked at again only to say why)."""
        if request is None:
            if len(body) > MAX_BODY_BYTES:
                raise _Invalid("request body is larger than 1 MiB", [{"field": "body", "message": "larger than 1 MiB"}])
            try:
                raw = strict_json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise _Invalid("body is not valid UTF-8 JSON", [{"field": "body", "message": str(exc)[:200]}]) from None
            except RecursionError:
                raise _Invalid("body is nested too deeply", [{"field": "body", "message": "nested too deeply"}]) from None
            if _unstorable(raw):
                raise _Invalid("body contains text that is not accepted (U+0000 or an unpaired surrogate)",
                               [{"field": "body", "message": "U+0000 or an unpaired surrogate"}])
            raise _Invalid("body must be a JSON object", [{"field": "body", "message": "not an object"}])
        try:
            cmd = CommandEnvelope.model_validate(request)
        except ValidationError as exc:
            raise _Invalid("invalid command envelope", details_from(exc)) from None
        if cmd.commandType != routing_key:
            raise _Invalid(f"commandType {cmd.commandType!r} differs from routing key {routing_key!r}",
                           [{"field": "commandType", "message": f"must equal the routing key {routing_key!r}"}])
        model_cls = c.COMMANDS.get(cmd.commandType)
        if model_cls is None or cmd.commandType not in self._handlers:
            raise _Invalid(f"unknown command type {cmd.commandType!r}",
                           [{"field": "commandType", "message": "unknown command type"}])
        try:
            data = model_cls.model_validate(cmd.data)
        except ValidationError as exc:
            raise _Invalid(f"invalid data for {cmd.commandType}", details_from(exc, "data"),
                           self._target_id(cmd, None)) from None
        if cmd.commandType in CREATING and cmd.expectedVersion not in (None, 0):
            raise _Invalid("expectedVersion of a creating command may only be 0",
                           [{"field": "expectedVersion", "message": "must be 0 for a new aggregate"}])
        return cmd, data

    async def _reply_invalid(self, request: dict[str, Any] | None,
                             exc: _Invalid) -> tuple[dict[str, Any], bool]:
        command_id, command_type = None, None
        raw = request or {}
        if isinstance(raw.get("commandId"), str) and 0 < len(raw["commandId"].strip()) <= 64:
            command_id = raw["commandId"].strip()
            command_type = raw.get("commandType") if isinstance(raw.get("commandType"), str) else None
        reply = rejected(command_id, VALIDATION_ERROR, exc.message, exc.details, exc.aggregate_id)
        if command_id is None:
            return reply, False
        # the contract stores the first reply to a commandId, whatever it was
        return await self._store.save_reply(command_id, command_type, reply, request), True

    @staticmethod
    def _target_id(cmd: CommandEnvelope, data: Any) -> str | None:
        key = {"RegisterCustomer": "customerId", "AddProduct": "productId"}.get(cmd.commandType, "orderId")
        if cmd.commandType == "RestockProduct":
            key = "productId"
        value = getattr(data, key, None) if data is not None else cmd.data.get(key)
        return value if isinstance(value, str) and value else None

    # -- handlers: each checks its rules and returns its events and how to persist them ----

    async def _register_customer(self, cmd, data: c.RegisterCustomer, actor: Actor, tx: Tx):
        customer_id = data.customerId or str(uuid.uuid4())
        model.authorize_self_service(actor)
        model.authorize_owner(actor, customer_id)
        customer = Customer(customer_id, data.name, data.email, parse_money(data.creditLimit))
        event = model.register_customer(customer, exists=await tx.customer_exists(customer_id))
        return [event], lambda tx: tx.insert_customer(customer)

    async def _add_product(self, cmd, data: c.AddProduct, actor: Actor, tx: Tx):
        model.authorize_admin(actor)
        product_id = data.productId or str(uuid.uuid4())
        product = Product(product_id, data.name, parse_money(data.price), data.stock)
        event = model.add_product(product, exists=await tx.product_exists(product_id))
        return [event], lambda tx: tx.insert_product(product)

    async def _place_order(self, cmd, data: c.PlaceOrder, actor: Actor, tx: Tx):
        model.authorize_self_service(actor)
        order_id = data.orderId or str(uuid.uuid4())
        ids = [i.productId for i in data.items]
        customer, products, exists = await tx.customer_and_products(data.customerId, ids, order_id)
        if customer is None:
            raise DomainError("not_found", f"customer {data.customerId} not found",
                              [{"field": "data.customerId", "message": "not found"}])
        missing = [{"field": f"data.items[{n}].productId", "message": f"product {pid} not found"}
                   for n, pid in enumerate(ids) if pid not in products]
        if missing:
            raise DomainError("not_found", "; ".join(m["message"] for m in missing), missing)
        model.authorize_owner(actor, customer.id)
        order, event = model.place_order(
            order_id, customer, products, [(i.productId, i.quantity) for i in data.items],
            data.shippingAddress.model_dump(), customer.open_cents, exists=exists)

        def persist(tx: Tx) -> None:
            tx.insert_order(order)
            tx.update_stock(list(products.values()))

        return [event], persist

    async def _restock_product(self, cmd, data: c.RestockProduct, actor: Actor, tx: Tx):
        model.authorize_admin(actor)
        products = await tx.products([data.productId], lock=True)
        product = products.get(data.productId)
        if product is None:
            raise DomainError("not_found", f"product {data.productId} not found",
                              [{"field": "data.productId", "message": "not found"}])
        model.check_expected_version(cmd.expectedVersion, product.version, f"product {product.id}")
        event = model.restock_product(product, data.quantity)
        return [event], lambda tx: tx.update_product(product)

    async def _order_transition(self, cmd, data, actor: Actor, tx: Tx):
        if cmd.commandType == "CancelOrder":
            model.authorize_self_service(actor)
        else:
            model.authorize_admin(actor)
        order = await tx.order(data.orderId, lock=True)
        if order is None:
            raise DomainError("not_found", f"order {data.orderId} not found",
                              [{"field": "data.orderId", "message": "not found"}])
        if cmd.commandType == "CancelOrder":
            model.authorize_owner(actor, order.customer_id)
        model.check_expected_version(cmd.expectedVersion, order.version, f"order {order.id}")
        products: dict[str, Product] = {}
        if cmd.commandType == "CancelOrder" and order.status == "placed":
            # the customer before the products, as PlaceOrder locks them: the trigger on
            # orders changes the customer's open amount when this cancel is written
            _, products, _ = await tx.customer_and_products(order.customer_id, [ln.product_id for ln in order.lines])
        extra = data.model_dump(exclude={"orderId"})
        event = model.transition(order, cmd.commandType, extra, products)

        def persist(tx: Tx) -> None:
            tx.update_order(order)
            if products:
                tx.update_stock(list(products.values()))

        return [event], persist
