from __future__ import annotations

from typing import Any, Protocol


class ViewStore(Protocol):
    async def get_order(self, order_id: str) -> dict[str, Any] | None: ...

    async def insert_order(self, view: dict[str, Any]) -> bool:
        """False when a document with that id already exists."""

    async def replace_order(self, view: dict[str, Any], expected_version: int) -> bool:
        """Replaces only if the stored version is `expected_version`; False otherwise."""

    async def mark_processed(self, position: int) -> None: ...

    async def advance_watermark(self) -> int: ...
