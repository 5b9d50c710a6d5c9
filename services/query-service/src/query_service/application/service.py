"""Turns a raw query request into exactly one QueryReply body."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from cqrs_shared.contracts.envelopes import MAX_BODY_BYTES, QueryEnvelope, QueryReply
from cqrs_shared.contracts.errors import NOT_FOUND, STALE, VALIDATION_ERROR, details_from, error_body
from cqrs_shared.topology import QUERY_TYPES

from query_service.application.ports import ViewReader
from query_service.application.watermark import WatermarkWatcher
from query_service.domain.queries import GetOrderDetails, order_details_result


def _reply(query_id: str | None, *, result: Any = None, position: int | None = None,
           error: dict[str, Any] | None = None) -> dict[str, Any]:
    return QueryReply(queryId=query_id, status="error" if error else "ok", result=result,
                      position=position, error=error).model_dump()


def invalid(query_id: str | None, message: str, details: list[dict[str, str]] | None = None,
            position: int | None = None) -> dict[str, Any]:
    return _reply(query_id, position=position, error=error_body(VALIDATION_ERROR, message, details))


class QueryService:
    def __init__(self, reader: ViewReader, watcher: WatermarkWatcher) -> None:
        self._reader = reader
        self._watcher = watcher

    async def handle(self, body: bytes, routing_key: str | None) -> dict[str, Any]:
        if len(body) > MAX_BODY_BYTES:
            return invalid(None, "request body is larger than 1 MiB")
        try:
            raw = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            return invalid(None, "request body is not valid JSON")
        qid = raw.get("queryId") if isinstance(raw, dict) else None
        qid = qid if isinstance(qid, str) else None
        try:
            query = QueryEnvelope.model_validate(raw)
        except ValidationError as exc:
            return invalid(qid, "invalid query envelope", details_from(exc))
        qid = query.queryId
        if routing_key is not None and query.queryType != routing_key:
            return invalid(qid, f"queryType {query.queryType!r} does not match routing key {routing_key!r}",
                           [{"field": "queryType", "message": "must equal the routing key"}])
        if query.queryType not in QUERY_TYPES:
            return invalid(qid, f"unknown query type {query.queryType!r}",
                           [{"field": "queryType", "message": "unknown query type"}])
        if query.queryType != "GetOrderDetails":
            return invalid(qid, f"query type {query.queryType} is not supported yet",
                           [{"field": "queryType", "message": "not supported yet"}])
        try:
            params = GetOrderDetails.model_validate(query.parameters)
        except ValidationError as exc:
            return invalid(qid, "invalid parameters", details_from(exc, "parameters"))

        position = await self._reader.watermark()
        if query.minPosition is not None and position < query.minPosition:
            reached = await self._watcher.wait_for(query.minPosition, query.maxWaitMs / 1000)
            if reached is None:
                position = await self._reader.watermark()
                if position < query.minPosition:
                    return _reply(qid, position=position, error=error_body(
                        STALE, f"views have reached position {position}, not {query.minPosition}, "
                               f"within {query.maxWaitMs} ms"))
            else:
                position = reached
        view = await self._reader.get_order(params.orderId)
        if view is None:
            return _reply(qid, position=position,
                          error=error_body(NOT_FOUND, f"order {params.orderId} not found"))
        return _reply(qid, position=position, result=order_details_result(view, params.includeHistory))
