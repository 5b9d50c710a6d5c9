"""JSON log lines carry the service, the instance and the identifiers bound for the task."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from cqrs_shared import logs


def test_lines_are_json_with_context_per_task(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    logs.configure("command-service", "pod-1")
    log = logging.getLogger("t")

    async def handle(cid: str) -> None:
        logs.bind(commandId=cid, correlationId=f"corr-{cid}", ignored=None)
        await asyncio.sleep(0)
        log.info("handled", extra={"status": "accepted"})

    async def main() -> None:
        await asyncio.gather(asyncio.create_task(handle("a")), asyncio.create_task(handle("b")))
        log.info("outside")

    asyncio.run(main())
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    by_cid = {line.get("commandId"): line for line in lines}
    assert by_cid["a"]["correlationId"] == "corr-a" and by_cid["b"]["correlationId"] == "corr-b"
    assert by_cid["a"]["service"] == "command-service" and by_cid["a"]["instance"] == "pod-1"
    assert by_cid["a"]["status"] == "accepted" and by_cid["a"]["level"] == "INFO" and "time" in by_cid["a"]
    assert "ignored" not in by_cid["a"]
    assert by_cid[None]["message"] == "outside"  # nothing leaked out of the tasks
    logging.getLogger().handlers.clear()
