from __future__ import annotations

from typing import Any, Protocol


class ViewReader(Protocol):
    async def get_order(self, order_id: str) -> dict[str, Any] | None: ...

    async def page_orders(self, flt: dict[str, Any], skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Orders matching `flt`, newest first (placedAt desc, id asc), and the total count."""

    async def all_orders(self, flt: dict[str, Any]) -> list[dict[str, Any]]: ...

    async def get_customer(self, customer_id: str) -> dict[str, Any] | None: ...

    async def get_product(self, product_id: str) -> dict[str, Any] | None: ...

    async def watermark(self) -> int: ...
