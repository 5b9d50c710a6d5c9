"""What the application needs from the outside world (implemented in adapters)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from command_service.domain.model import Customer, Order, Product


class Tx(Protocol):
    """One command's transaction. Reads run at once; the state changes (insert_*, update_*)
    are buffered and written by `append`, in the same statement that takes the positions,
    so the position counter is held for one statement and the commit only. A command may
    change each table at most once."""

    async def customer(self, customer_id: str, *, lock: bool = False) -> Customer | None: ...
    async def customer_exists(self, customer_id: str) -> bool: ...
    async def products(self, product_ids: list[str], *, lock: bool = False) -> dict[str, Product]: ...
    async def product_exists(self, product_id: str) -> bool: ...
    async def customer_and_products(self, customer_id: str, product_ids: list[str],
                                    order_id: str | None = None) -> tuple[Customer | None, dict[str, Product], bool]:
        """The customer and the products, locked (FOR UPDATE: the customer, then the products
        in id order), and whether order `order_id` exists, in one round trip. The customer's
        open_cents includes every committed order (it is read from the locked row)."""
        ...
    async def order(self, order_id: str, *, lock: bool = False) -> Order | None: ...
    def update_order(self, order: Order) -> None: ...
    def update_product(self, product: Product) -> None: ...
    def insert_customer(self, customer: Customer) -> None: ...
    def insert_product(self, product: Product) -> None: ...
    def update_stock(self, products: list[Product]) -> None: ...
    def insert_order(self, order: Order) -> None: ...
    async def append(self, envelopes: list[dict[str, Any]], command_id: str, command_type: str,
                     reply: dict[str, Any], request: dict[str, Any] | None) -> int:
        """The last step of an accepted command: takes len(envelopes) global positions and
        the commit-order time, and writes the buffered state changes (timestamped with it),
        the events (their `position` and `timestamp` set), the reply and its audit row
        (their `position` set to the last one). Returns the last position. Raises
        ReplyExists when a reply for command_id is already stored."""
        ...


class ReplyExists(Exception):
    pass


class CommandStore(Protocol):
    async def stored_reply(self, command_id: str) -> dict[str, Any] | None: ...
    async def in_transaction(self, work: Callable[[Tx], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """Runs `work` in one transaction, retrying on deadlocks and serialization failures."""
        ...
    async def in_one_transaction(self, works: list[Callable[[Tx], Awaitable[Any]]],
                                 prefetch: list[tuple[str, list[str], str | None]] | None = None) -> list[Any]:
        """Runs the works in order in one transaction (each sees the effects of those before
        it) and returns their results; on any exception rolls back and re-raises (no retry).
        `prefetch`, only when every work is a PlaceOrder: (customer id, product ids, order id)
        of each, locked and read up front in one statement; their customer_and_products is
        answered from those rows, kept up to date with the group's own changes."""
        ...
    async def save_reply(self, command_id: str, command_type: str | None, reply: dict[str, Any],
                         request: dict[str, Any] | None) -> dict[str, Any]:
        """Stores the reply unless one exists, and audits `request` with the reply it gets,
        in one transaction; returns the stored reply."""
        ...
    async def audit(self, request: dict[str, Any] | None, reply: dict[str, Any]) -> None:
        """Records a command received and its outcome."""
        ...
