"""Turns a raw query request into exactly one QueryReply body."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from cqrs_shared.contracts.envelopes import MAX_BODY_BYTES, QueryEnvelope, QueryReply
from cqrs_shared.contracts.errors import NOT_FOUND, STALE, VALIDATION_ERROR, details_from, error_body
from cqrs_shared.topology import QUERY_TYPES
from cqrs_shared import strict_json

from query_service.application.ports import ViewReader
from query_service.application.watermark import WatermarkWatcher
import re

from query_service.domain import queries as Q
from query_service.domain.queries import GetOrderDetails, order_details_result

PARAMS = {
    "GetOrderDetails": GetOrderDetails, "ListCustomerOrders": Q.ListCustomerOrders,
    "SearchOrders": Q.SearchOrders, "GetCustomerSummary": Q.GetCustomerSummary,
    "GetDailyOrderMetrics": Q.GetDailyOrderMetrics, "GetPopularProducts": Q.GetPopularProducts,
    "GetProductAvailability": Q.GetProductAvailability,
}


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

    async def handle(self, body: bytes, routing_key: str | None, content_type: str | None = None) -> dict[str, Any]:
        if content_type and content_type.split(";")[0].strip().lower() != "application/json":
            return invalid(None, f"content type {content_type!r} is not application/json",
                           [{"field": "content_type", "message": "must be application/json"}])
        if len(body) > MAX_BODY_BYTES:
            return invalid(None, "request body is larger than 1 MiB")
        try:
            raw = strict_json.loads(body)
        except (UnicodeDecodeError, ValueError):
            return invalid(None, "request body is not valid JSON")
        except RecursionError:
            return invalid(None, "request body is nested too deeply")
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
        model = PARAMS.get(query.queryType)
        if model is None:
            return invalid(qid, f"query type {query.queryType} is not supported yet",
                           [{"field": "queryType", "message": "not supported yet"}])
        try:
            params = model.model_validate(query.parameters)
        except ValidationError as exc:
            return invalid(qid, "invalid parameters", details_from(exc, "parameters"))

        position = await self._watcher.current()
        if query.minPosition is not None and position < query.minPosition:
            reached = await self._watcher.wait_for(query.minPosition, query.maxWaitMs / 1000)
            if reached is None:
                position = await self._watcher.current()
                if position < query.minPosition:
                    return _reply(qid, position=position, error=error_body(
                        STALE, f"views have reached position {position}, not {query.minPosition}, "
                               f"within {query.maxWaitMs} ms"))
            else:
                position = reached
        if not isinstance(params, GetOrderDetails):
            result, err = await self._run(params)
            if err is not None:
                return _reply(qid, position=position, error=err)
            return _reply(qid, position=position, result=result)
        view = await self._reader.get_order(params.orderId)
        if view is None:
            return _reply(qid, position=position,
                          error=error_body(NOT_FOUND, f"order {params.orderId} not found"))
        return _reply(qid, position=position, result=order_details_result(view, params.includeHistory))

    async def _page(self, flt: dict[str, Any], page: int, size: int) -> dict[str, Any]:
        docs, total = await self._reader.page_orders(flt, (page - 1) * size, size)
        return {"items": [Q.list_item(d) for d in docs], "total": total, "page": page, "pageSize": size}

    async def _run(self, p: Any) -> tuple[Any, dict[str, Any] | None]:
        if isinstance(p, Q.ListCustomerOrders):
            flt: dict[str, Any] = {"customerId": p.customerId}
            if p.status:
                flt["status"] = p.status
            return await self._page(flt, p.page, p.pageSize), None
        if isinstance(p, Q.SearchOrders):
            flt = {}
            if p.status:
                flt["status"] = p.status
            if p.text:
                flt["search"] = {"$regex": re.escape(p.text.lower()), "$options": "i"}
            placed = Q.date_bounds(p.dateFrom, p.dateTo)
            if placed:
                flt["placedAt"] = placed
            cents: dict[str, int] = {}
            if p.minAmount is not None:
                cents["$gte"] = Q.parse_money(p.minAmount)
            if p.maxAmount is not None:
                cents["$lte"] = Q.parse_money(p.maxAmount)
            if cents:
                flt["totalCents"] = cents
            return await self._page(flt, p.page, p.pageSize), None
        if isinstance(p, Q.GetCustomerSummary):
            customer = await self._reader.get_customer(p.customerId)
            orders = await self._reader.all_orders({"customerId": p.customerId})
            if customer is None and not orders:
                return None, error_body(NOT_FOUND, f"customer {p.customerId} not found")
            return Q.customer_summary(p.customerId, customer, orders), None
        if isinstance(p, Q.GetDailyOrderMetrics):
            orders = await self._reader.all_orders({"placedAt": Q.date_bounds(p.dateFrom, p.dateTo)})
            return Q.daily_metrics(orders), None
        if isinstance(p, Q.GetPopularProducts):
            bounds = Q.date_bounds(p.dateFrom, p.dateTo)
            flt = {}
            if bounds:
                flt["placedAt"] = bounds
            return Q.popular_products(await self._reader.all_orders(flt), p.limit), None
        if isinstance(p, Q.GetProductAvailability):
            doc = await self._reader.get_product(p.productId)
            if doc is None or doc.get("name") is None:
                return None, error_body(NOT_FOUND, f"product {p.productId} not found")
            return Q.product_result(doc), None
        raise AssertionError(type(p))
