from __future__ import annotations

from typing import Any, Protocol


class ViewReader(Protocol):
    async def get_order(self, order_id: str) -> dict[str, Any] | None: ...

    async def watermark(self) -> int: ...
