"""cqrs_shared.health: /livez, /readyz (sync and async checks), /metrics, unknown paths."""

from __future__ import annotations

import asyncio
import json

from cqrs_shared.health import HealthServer


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_livez_and_readyz_follow_the_checks() -> None:
    state = {"db": True}

    async def amqp_ok() -> bool:
        return True

    def broken() -> bool:
        raise RuntimeError("boom")

    server = HealthServer(0, {"amqp": amqp_ok, "db": lambda: state["db"]}, host="127.0.0.1")
    async with server:
        assert await _get(server.port, "/livez") == (200, b"ok\n")
        status, body = await _get(server.port, "/readyz")
        assert status == 200 and json.loads(body) == {"ready": True, "failing": []}

        state["db"] = False
        status, body = await _get(server.port, "/readyz")
        assert status == 503 and json.loads(body)["failing"] == ["db"]

        server.checks["mongo"] = broken
        status, body = await _get(server.port, "/readyz")
        assert status == 503 and json.loads(body)["failing"] == ["db", "mongo"]
        assert (await _get(server.port, "/livez"))[0] == 200

        assert (await _get(server.port, "/nope"))[0] == 404
        status, _ = await _get(server.port, "/metrics")
        assert status in (200, 404)  # 200 only when prometheus_client is installed


async def test_slow_async_check_times_out_as_not_ready() -> None:
    async def hangs() -> bool:
        await asyncio.sleep(10)
        return True

    async with HealthServer(0, {"slow": hangs}, host="127.0.0.1", check_timeout=0.1) as server:
        status, body = await _get(server.port, "/readyz")
        assert status == 503 and json.loads(body)["failing"] == ["slow"]
