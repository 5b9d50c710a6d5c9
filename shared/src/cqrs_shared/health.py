"""A tiny HTTP server for Kubernetes probes and metrics, standard library only.

    server = HealthServer(port, {"amqp": lambda: not conn.is_closed, "db": ping})
    await server.start()   # from async code; serves until await server.stop()

- ``/livez``: 200 while the process (its event loop) runs.
- ``/readyz``: 200 when every check returns true, else 503 with a JSON body naming the
  failing checks. A check may be sync or async; an exception or a timeout counts as false.
- ``/metrics``: Prometheus text from prometheus_client when it is importable, else 404;
  the refreshers of cqrs_shared.metrics (queue depths, outbox backlog) run first.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
from collections.abc import Awaitable, Callable

Check = Callable[[], Awaitable[bool]] | Callable[[], bool]

DEFAULT_PORT = 8080
CHECK_TIMEOUT_S = 2.0


def health_port() -> int:
    return int(os.environ.get("HEALTH_PORT", DEFAULT_PORT))


class HealthServer:
    def __init__(self, port: int | None = None, checks: dict[str, Check] | None = None,
                 host: str = "0.0.0.0", check_timeout: float = CHECK_TIMEOUT_S) -> None:
        self.port = health_port() if port is None else port
        self.host = host
        self.checks: dict[str, Check] = dict(checks or {})
        self.check_timeout = check_timeout
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        if self.port == 0:  # ephemeral port (tests)
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def failing_checks(self) -> list[str]:
        failing = []
        for name, check in self.checks.items():
            try:
                result = check()
                if inspect.isawaitable(result):
                    result = await asyncio.wait_for(result, self.check_timeout)
                ok = bool(result)
            except Exception:  # noqa: BLE001 - a failing check is "not ready"
                ok = False
            if not ok:
                failing.append(name)
        return failing

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while True:  # skip headers
                line = await asyncio.wait_for(reader.readline(), 5)
                if line in (b"\r\n", b"\n", b""):
                    break
            parts = request_line.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?", 1)[0]) if len(parts) >= 2 else ("", "")
            status, ctype, body = await self._route(method, path)
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n").encode()
            writer.write(head + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    async def _route(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        if path == "/livez":
            return "200 OK", "text/plain", b"ok\n"
        if path == "/readyz":
            failing = await self.failing_checks()
            body = json.dumps({"ready": not failing, "failing": failing}).encode()
            return ("503 Service Unavailable" if failing else "200 OK"), "application/json", body
        if path == "/metrics":
            try:
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
            except ImportError:
                return "404 Not Found", "text/plain", b"prometheus_client is not installed\n"
            from cqrs_shared import metrics

            await metrics.refresh(self.check_timeout)  # values read from the broker / database
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest()
        return "404 Not Found", "text/plain", b"not found\n"
