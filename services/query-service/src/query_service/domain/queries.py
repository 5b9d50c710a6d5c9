from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool

from cqrs_shared.contracts.envelopes import Id


class GetOrderDetails(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    orderId: Id
    includeHistory: StrictBool = False


def order_details_result(view: dict[str, Any], include_history: bool) -> dict[str, Any]:
    result = {k: v for k, v in view.items() if k != "_id"}
    if not include_history:
        result.pop("history", None)
    else:
        result.setdefault("history", [])
    return result
