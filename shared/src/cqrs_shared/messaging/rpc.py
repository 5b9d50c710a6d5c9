"""RPC over AMQP: replies on the server side, and a client with many calls in flight.

Replies are published to the default exchange with the request's `reply_to` as routing key
and its `correlation_id`, without `mandatory` (on RabbitMQ 3.10 a mandatory publish to
amq.rabbitmq.reply-to comes back as NO_ROUTE even when delivered).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from cqrs_shared.topology import COMMANDS_EXCHANGE, QUERIES_EXCHANGE


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


async def send_reply(channel: AbstractChannel, request: AbstractIncomingMessage, body: dict[str, Any]) -> None:
    if not request.reply_to:
        return  # fire-and-forget request
    await channel.default_exchange.publish(
        aio_pika.Message(
            body=dumps(body),
            content_type="application/json",
            correlation_id=request.correlation_id,
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
        ),
        routing_key=request.reply_to,
        mandatory=False,
    )


class RpcTimeout(Exception):
    pass


class RpcClient:
    """Sends commands and queries; replies come back on amq.rabbitmq.reply-to and are matched
    to their futures by correlation id, so any number of calls share one channel."""

    def __init__(self, connection: AbstractRobustConnection) -> None:
        self._connection = connection
        self._channel: AbstractChannel | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._commands = None
        self._queries = None

    @classmethod
    async def connect(cls, amqp_url: str) -> "RpcClient":
        from cqrs_shared.messaging.connection import connect

        client = cls(await connect(amqp_url, name="rpc-client"))
        await client.start()
        return client

    async def start(self) -> None:
        self._channel = await self._connection.channel()
        await self._consume_replies(self._channel)
        # the robust channel restores declared queues and their consumers after a
        # reconnection, but not the direct reply-to pseudo-queue (never declared): consume
        # it again on every reopen, or no reply would ever arrive after a broker restart
        self._channel.reopen_callbacks.add(self._consume_replies)
        self._commands = await self._channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        self._queries = await self._channel.get_exchange(QUERIES_EXCHANGE, ensure=False)

    async def _consume_replies(self, channel: AbstractChannel, *_: Any) -> None:
        reply_queue = await channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
        await reply_queue.consume(self._on_reply, no_ack=True)

    async def close(self) -> None:
        await self._connection.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        fut = self._pending.pop(message.correlation_id or "", None)
        if fut is not None and not fut.done():
            fut.set_result(json.loads(message.body))

    async def call_raw(
        self, exchange: str, routing_key: str, body: bytes, *, timeout: float = 10.0,
        content_type: str = "application/json", headers: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        assert self._channel is not None
        corr = uuid.uuid4().hex
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[corr] = fut
        ex = self._commands if exchange == COMMANDS_EXCHANGE else self._queries
        if exchange == "":
            ex = self._channel.default_exchange
        elif exchange not in (COMMANDS_EXCHANGE, QUERIES_EXCHANGE):
            ex = await self._channel.get_exchange(exchange, ensure=False)
        try:
            await ex.publish(
                aio_pika.Message(
                    body=body, content_type=content_type, correlation_id=corr,
                    reply_to="amq.rabbitmq.reply-to", headers=headers or {},
                ),
                routing_key=routing_key,
            )
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError as exc:
            raise RpcTimeout(f"no reply to {routing_key} within {timeout}s") from exc
        finally:
            self._pending.pop(corr, None)

    async def send_command(self, command: dict[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
        command = {"commandId": uuid.uuid4().hex, **command}
        return await self.call_raw(COMMANDS_EXCHANGE, command["commandType"], dumps(command), timeout=timeout)

    async def query(self, query: dict[str, Any], *, timeout: float = 35.0) -> dict[str, Any]:
        query = {"queryId": uuid.uuid4().hex, **query}
        return await self.call_raw(QUERIES_EXCHANGE, query["queryType"], dumps(query), timeout=timeout)
