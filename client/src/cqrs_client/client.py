"""Async client: many requests in flight on one channel, replies on direct reply-to."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone
from typing import Any

import aio_pika
import aio_pika.exceptions
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from pydantic import BaseModel, ValidationError

from cqrs_shared import tracing
from cqrs_shared.contracts.commands import COMMANDS
from cqrs_shared.contracts.errors import details_from
from cqrs_shared.contracts.queries import QUERIES, parameters_of

from .errors import BrokerUnavailable, ServiceUnavailable, RequestTimeout, ValidationFailed, error_from_reply

COMMANDS_EXCHANGE = "cqrs.commands"
QUERIES_EXCHANGE = "cqrs.queries"
EVENTS_EXCHANGE = "cqrs.events"
REPLY_TO = "amq.rabbitmq.reply-to"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _rejected_locally(details: list[dict[str, str]], reply: dict[str, Any], what: str) -> ValidationFailed:
    return ValidationFailed(
        "validation_error: " + "; ".join(f"{d['field']}: {d['message']}" for d in details),
        {**reply, "error": {"code": "validation_error", "message": f"invalid {what} (checked by the client, not sent)",
                            "details": details}})


def validate_command(command_type: str, data: dict[str, Any]) -> None:
    """Raises ValidationFailed (a synthetic reply with `commandId: null`, the details the service would
    give) when `data` breaks the contract."""
    model = COMMANDS.get(command_type)
    if model is None:
        details = [{"field": "commandType", "message": f"unknown command type {command_type!r}"}]
    else:
        try:
            model.model_validate(data)
            return
        except ValidationError as e:
            details = details_from(e, "data")
    raise _rejected_locally(details, {"commandId": None, "status": "rejected", "aggregateId": None, "version": None,
                                      "position": None}, "command")


def validate_query(query_type: str, parameters: dict[str, Any]) -> None:
    """Raises ValidationFailed when `parameters` break the contract (same details as the service)."""
    model = QUERIES.get(query_type)
    if model is None:
        details = [{"field": "queryType", "message": "unknown query type"}]
    else:
        try:
            model.model_validate(parameters)
            return
        except ValidationError as e:
            details = details_from(e, "parameters")
    raise _rejected_locally(details, {"queryId": None, "status": "error", "result": None, "position": None}, "query")


def command_type_and_data(command: str | BaseModel, data: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """("PlaceOrder", {...}) as given, or a contract model (cqrs_shared.contracts.commands.PlaceOrder(...))
    turned into its type and wire `data`."""
    if isinstance(command, BaseModel):
        if data is not None:
            raise TypeError("pass either a command model or a command type with data, not both")
        ctype = type(command).__name__
        if COMMANDS.get(ctype) is not type(command):
            raise TypeError(f"{ctype} is not a command model of cqrs_shared.contracts.commands")
        return ctype, command.model_dump(mode="json", exclude_none=True)
    if data is None:
        raise TypeError(f"data is required with the command type {command!r}")
    return command, data


def query_type_and_parameters(query: str | BaseModel,
                              parameters: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """("GetOrderDetails", {...}) as given, or a model of cqrs_shared.contracts.queries."""
    if isinstance(query, BaseModel):
        if parameters is not None:
            raise TypeError("pass either a query model or a query type with parameters, not both")
        qtype = type(query).__name__
        if QUERIES.get(qtype) is not type(query):
            raise TypeError(f"{qtype} is not a query model of cqrs_shared.contracts.queries")
        return qtype, parameters_of(query)
    return query, parameters or {}


def command_body(command_type: str, data: dict[str, Any], *, user_id: str, roles: list[str] | tuple[str, ...] = (),
                 client_id: str = "cqrs-client", expected_version: int | None = None, command_id: str | None = None,
                 correlation_id: str | None = None) -> dict[str, Any]:
    """The command envelope exactly as it goes on the wire."""
    metadata: dict[str, Any] = {"clientId": client_id, "roles": list(roles)}
    if correlation_id:
        metadata["correlationId"] = correlation_id
    body: dict[str, Any] = {"commandId": command_id or str(uuid.uuid4()), "commandType": command_type,
                            "timestamp": _now(), "userId": user_id, "data": data, "metadata": metadata}
    if expected_version is not None:
        body["expectedVersion"] = expected_version
    return body


def query_body(query_type: str, parameters: dict[str, Any], *, min_position: int | None = None,
               max_wait_ms: int | None = None, query_id: str | None = None) -> dict[str, Any]:
    """The query envelope exactly as it goes on the wire."""
    body: dict[str, Any] = {"queryId": query_id or str(uuid.uuid4()), "queryType": query_type,
                            "parameters": parameters}
    if min_position is not None:
        body["minPosition"] = min_position
    if max_wait_ms is not None:
        body["maxWaitMs"] = max_wait_ms
    return body


class CqrsClient:
    """Use `await CqrsClient.connect(url)` or `async with CqrsClient(url) as c:`.

    The connection is robust (reconnects); replies come back on `amq.rabbitmq.reply-to` and
    are matched to futures by correlation id, so any number of calls share one channel.
    """

    def __init__(self, amqp_url: str = DEFAULT_AMQP_URL, *, client_id: str = "cqrs-client",
                 connect_timeout: float = 10.0) -> None:
        self.amqp_url = amqp_url
        self.client_id = client_id
        self.connect_timeout = connect_timeout
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._exchanges: dict[str, Any] = {}

    @classmethod
    async def connect(cls, amqp_url: str = DEFAULT_AMQP_URL, **kw: Any) -> "CqrsClient":
        c = cls(amqp_url, **kw)
        await c.start()
        return c

    async def __aenter__(self) -> "CqrsClient":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def start(self) -> None:
        try:
            self._connection = await asyncio.wait_for(aio_pika.connect_robust(self.amqp_url), self.connect_timeout)
        except Exception as exc:  # refused, DNS, auth, vhost, timeout: all mean "cannot use the broker"
            raise BrokerUnavailable(f"cannot reach RabbitMQ at {_safe(self.amqp_url)}: "
                                    f"{_connect_problem(exc, self.connect_timeout)}") from exc
        await self._open_channel()

    async def _open_channel(self) -> AbstractChannel:
        assert self._connection is not None, "not connected"
        channel = await self._connection.channel()
        reply_queue = await channel.get_queue(REPLY_TO, ensure=False)
        await reply_queue.consume(self._on_reply, no_ack=True)
        # get_queue(ensure=False) is not restored by the robust channel: consume again after
        # every reopen (reconnection), or replies would never arrive
        reopen = getattr(channel, "reopen_callbacks", None)
        if reopen is not None:
            reopen.add(self._on_channel_reopen)
        self._channel, self._exchanges = channel, {}
        return channel

    async def _on_channel_reopen(self, channel: Any, *args: Any) -> None:
        if channel is not self._channel:
            return
        reply_queue = await channel.get_queue(REPLY_TO, ensure=False)
        await reply_queue.consume(self._on_reply, no_ack=True)

    async def close(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    @property
    def connection(self) -> AbstractRobustConnection:
        assert self._connection is not None, "not connected"
        return self._connection

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        fut = self._pending.pop(message.correlation_id or "", None)
        if fut is None or fut.done():
            return
        try:
            fut.set_result(json.loads(message.body))
        except ValueError as exc:
            fut.set_exception(exc)

    async def call(self, exchange: str, routing_key: str, body: dict[str, Any], *, timeout: float,
                   headers: dict[str, Any] | None = None) -> dict[str, Any]:
        """Publishes one request and waits for its reply (raw dict, whatever its status).

        The request is sent in a CLIENT span (`<type> send`, child of the caller's current
        span) whose trace context travels in the `traceparent` header."""
        if self._connection is None:
            raise RuntimeError("client not started")
        with tracing.span(f"{routing_key} send", kind=tracing.SpanKind.CLIENT, attributes={
                "messaging.system": "rabbitmq", "messaging.operation": "publish",
                "messaging.destination.name": exchange or "(default)",
                "messaging.rabbitmq.destination.routing_key": routing_key}) as span:
            reply = await self._call(exchange, routing_key, body, timeout=timeout,
                                     headers=tracing.inject(dict(headers or {})))
            if reply.get("status") not in ("ok", "accepted"):
                tracing.mark_error(span, str((reply.get("error") or {}).get("code")))
            return reply

    async def _call(self, exchange: str, routing_key: str, body: dict[str, Any], *, timeout: float,
                    headers: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel
        if channel is None or channel.is_closed:
            # the broker closed it (e.g. a publish to an exchange that does not exist yet)
            channel = await self._open_channel()
        corr = uuid.uuid4().hex
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[corr] = fut
        try:
            ex = self._exchanges.get(exchange)
            if ex is None:
                ex = (channel.default_exchange if exchange == ""
                      else await channel.get_exchange(exchange, ensure=False))
                self._exchanges[exchange] = ex
            await ex.publish(
                aio_pika.Message(body=_dumps(body), content_type="application/json", correlation_id=corr,
                                 reply_to=REPLY_TO, headers=headers,
                                 delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT),
                routing_key=routing_key, mandatory=False,
            )
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError as exc:
            raise RequestTimeout(f"no reply to {routing_key} within {timeout}s") from exc
        except aio_pika.exceptions.ChannelClosed as exc:  # NOT_FOUND: the exchange is not declared
            self._channel = None
            raise ServiceUnavailable(f"cannot publish to {exchange!r}: {exc} (has the service ever started "
                                     "on this vhost?)") from exc
        finally:
            self._pending.pop(corr, None)

    async def send(self, command: str | BaseModel, data: dict[str, Any] | None = None, *, user_id: str,
                   roles: list[str] | tuple[str, ...] = (), expected_version: int | None = None,
                   command_id: str | None = None, correlation_id: str | None = None, timeout: float = 10.0,
                   validate: bool = True) -> dict[str, Any]:
        """Sends a command; returns the accepted reply or raises the error's typed exception.

        `command` is a command type with its `data`, or a model of cqrs_shared.contracts.commands."""
        command_type, data = command_type_and_data(command, data)
        if validate:
            validate_command(command_type, data)
        body = command_body(command_type, data, user_id=user_id, roles=roles, client_id=self.client_id,
                            expected_version=expected_version, command_id=command_id, correlation_id=correlation_id)
        reply = await self.call(COMMANDS_EXCHANGE, command_type, body, timeout=timeout)
        if reply.get("status") != "accepted":
            raise error_from_reply(reply)
        return reply

    async def query(self, query: str | BaseModel, parameters: dict[str, Any] | None = None, *,
                    min_position: int | None = None, max_wait_ms: int | None = None,
                    timeout: float | None = None, query_id: str | None = None, validate: bool = True,
                    correlation_id: str | None = None) -> dict[str, Any]:
        """Runs a query; returns the ok reply ({"result", "position", ...}) or raises.

        `query` is a query type with its `parameters`, or a model of cqrs_shared.contracts.queries.
        `correlation_id` goes to `metadata.correlationId` (logged by the query service)."""
        query_type, parameters = query_type_and_parameters(query, parameters)
        if validate:
            validate_query(query_type, parameters)
        body = query_body(query_type, parameters, min_position=min_position, max_wait_ms=max_wait_ms,
                          query_id=query_id)
        if correlation_id:
            body["metadata"] = {"correlationId": correlation_id}
        if timeout is None:  # the service may wait up to maxWaitMs before answering
            timeout = (max_wait_ms if max_wait_ms is not None else 5000) / 1000 + 10
        reply = await self.call(QUERIES_EXCHANGE, query_type, body, timeout=timeout)
        if reply.get("status") != "ok":
            raise error_from_reply(reply)
        return reply


def _connect_problem(exc: BaseException, timeout: float) -> str:
    """What went wrong while connecting, in words that say what to check."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aio_pika.exceptions.ProbableAuthenticationError) or "ACCESS_REFUSED" in text:
        return "login refused (check the user name and password in the URL)"
    if "Connection.Close" in text or "NOT_ALLOWED" in text:
        return ("the broker refused to open the connection (does the vhost in the URL exist, and may this user "
                "use it?)")
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer within {timeout:g} s (is RabbitMQ running, and is the host reachable?)"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return f"unknown host ({text})"
    return f"{text} (is RabbitMQ running?)"


def _safe(url: str) -> str:
    """The URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(url)
    if u.password:
        netloc = f"{u.username}:***@{u.hostname}" + (f":{u.port}" if u.port else "")
        return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))
    return url
