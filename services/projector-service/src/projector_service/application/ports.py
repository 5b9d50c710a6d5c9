from __future__ import annotations

from typing import Any, Protocol


class ViewStore(Protocol):
    async def get_order(self, order_id: str) -> dict[str, Any] | None: ...

    async def insert_order(self, view: dict[str, Any]) -> bool:
        """False when a document with that id already exists."""

    async def replace_order(self, view: dict[str, Any], expected_version: int) -> bool:
        """Replaces only if the stored version is `expected_version`; False otherwise."""

    async def set_product_info(self, product_id: str, fields: dict[str, Any], version: int) -> None: ...

    async def set_product_stock(self, product_id: str, stock: int, position: int) -> None:
        """Sets stock only if `position` is higher than the one that set it last."""

    async def upsert_customer(self, customer_id: str, fields: dict[str, Any]) -> None: ...

    async def mark_processed(self, position: int) -> None: ...

    async def advance_watermark(self) -> int: ...
