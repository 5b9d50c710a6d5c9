"""A thin blocking wrapper: runs a private event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from .client import DEFAULT_AMQP_URL, CqrsClient


class SyncCqrsClient:
    def __init__(self, amqp_url: str = DEFAULT_AMQP_URL, **kw: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cqrs-client-loop", daemon=True)
        self._thread.start()
        try:
            self._client: CqrsClient = self._run(CqrsClient.connect(amqp_url, **kw))
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def send(self, command: Any, data: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """Same arguments as CqrsClient.send."""
        return self._run(self._client.send(command, data, **kw))

    def query(self, query: Any, parameters: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """Same arguments as CqrsClient.query."""
        return self._run(self._client.query(query, parameters, **kw))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._client.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> "SyncCqrsClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
