"""Rebuild requests over AMQP (`cqrsctl rebuild`): every projector replica consumes
`projector-service.rebuild-requests` (bound to `cqrs.internal` / `projector.rebuild`), so a
request reaches one replica, which runs the one rebuild path (application/rebuild.py, the same
as `projector-service rebuild`) in-process and reports to the request's `reply_to`, with its
`correlation_id`: `accepted`, `progress` (throttled to 2 per second, repeated at least every
KEEPALIVE_S), then one `result` (cqrs_shared.contracts.rebuild).

Acknowledgement: a request is acknowledged as soon as a replica has taken it and answered
`accepted`; the rebuild then runs in a task of its own. It is never delivered again: if the
replica dies mid-rebuild, the rebuild is abandoned as any failed rebuild is (its heartbeat
stops; the next rebuild drops the unfinished set) and the requester, who no longer hears
from it, says so. Redelivering it would start a rebuild nobody waits for (possibly much later),
could crash replica after replica if the request itself were the cause, and an unacknowledged
request held for a long rebuild would hit the broker's consumer timeout (30 min by default)
and be redelivered while the first rebuild still runs.

The requester may go away (Ctrl-C, lost connection): the rebuild goes on and finishes;
replies to a reply queue that no longer exists are dropped by the broker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from pydantic import ValidationError

from cqrs_shared.contracts import rebuild as contract
from cqrs_shared.messaging.consumer import QueueConsumer
from cqrs_shared.topology import REBUILD_REQUEST_QUEUE

from projector_service.application.rebuild import Progress, RebuildRefused, RebuildResult

SERVICE = "projector-service"
MIN_INTERVAL_S = 0.5  # at most two progress messages per second
log = logging.getLogger("projector_service.rebuild_requests")

RunRebuild = Callable[[Callable[[Progress], None], float | None], Awaitable[RebuildResult]]


def progress_message(p: Progress | None, elapsed: float) -> dict[str, Any]:
    if p is None:  # registering (possibly waiting for the previous rebuild's old set to retire)
        return {"type": "progress", "phase": "starting", "viewSet": None, "applied": 0, "watermark": 0,
                "target": 0, "rate": 0.0, "elapsed": round(elapsed, 2)}
    return {"type": "progress", "phase": p.phase, "viewSet": p.view_set, "applied": p.applied,
            "watermark": p.watermark, "target": p.target, "rate": round(p.rate, 1), "elapsed": round(p.elapsed, 2)}


def result_message(r: RebuildResult, instance: str) -> dict[str, Any]:
    return {"type": "result", "status": contract.SWITCHED, "viewSet": r.view_set, "previous": r.previous,
            "applied": r.applied, "watermark": r.watermark, "elapsed": round(r.elapsed, 2),
            "rate": round(r.rate, 1), "dropped": r.dropped, "instance": instance}


def error_message(status: str, code: str, message: str, instance: str) -> dict[str, Any]:
    return {"type": "result", "status": status, "error": {"code": code, "message": message}, "instance": instance}


class _Replies:
    """Messages to one request's reply_to. A failed publish is logged and never stops the
    rebuild (the requester may be gone)."""

    def __init__(self, channel: Any, request: AbstractIncomingMessage) -> None:
        self._channel = channel
        self._reply_to = request.reply_to
        self._correlation_id = request.correlation_id

    async def send(self, body: dict[str, Any]) -> None:
        if not self._reply_to:
            return  # fire-and-forget request: the rebuild runs, nobody is told
        try:
            await self._channel.default_exchange.publish(
                aio_pika.Message(json.dumps(body).encode(), content_type="application/json",
                                 correlation_id=self._correlation_id, type=f"rebuild.{body['type']}",
                                 delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT),
                routing_key=self._reply_to, mandatory=False)
        except Exception as exc:  # noqa: BLE001 - reporting is best effort
            log.warning("could not report to %s: %r", self._reply_to, exc)


class RebuildRequests:
    def __init__(self, connection: AbstractRobustConnection, run: RunRebuild, *, instance: str) -> None:
        self._connection = connection
        self._run_rebuild = run
        self._instance = instance
        self._consumer = QueueConsumer(connection, REBUILD_REQUEST_QUEUE, self._handle, service=SERVICE, prefetch=1,
                                       on_deadline=self._expired, type_of=lambda _m: "RebuildRequest")
        self._channel: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._channel = await self._connection.channel()  # replies; closed after the rebuilds ended
        await self._consumer.start()

    async def stop(self, timeout: float = 15.0) -> None:
        """Takes no more requests; a rebuild still running is stopped (it abandons its set:
        the live views are unchanged) and its requester told so."""
        await self._consumer.stop()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def _expired(self, message: AbstractIncomingMessage) -> None:
        log.info("rebuild request taken after its deadline: ignored")
        await _Replies(self._channel, message).send(error_message(
            contract.EXPIRED, "unavailable", "the request was taken after its x-deadline; nothing was done",
            self._instance))

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        replies = _Replies(self._channel, message)
        try:
            request = contract.RebuildRequest.model_validate_json(message.body)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}"
                                 for e in exc.errors(include_url=False))
            log.warning("invalid rebuild request: %s", problems)
            await replies.send(error_message(contract.REJECTED, "validation_error",
                                             f"invalid rebuild request: {problems}", self._instance))
            return
        log.info("rebuild requested (reply to %s)", message.reply_to or "nobody")
        await replies.send({"type": "accepted", "instance": self._instance})
        task = asyncio.create_task(self._run(request, replies))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # returning acknowledges the request: it is never delivered again (see the module doc)

    async def _run(self, request: contract.RebuildRequest, replies: _Replies) -> None:
        started = time.monotonic()
        latest: list[Progress] = []
        changed = asyncio.Event()

        def on_progress(p: Progress) -> None:
            latest[:] = [p]
            changed.set()

        async def pump() -> None:
            while True:
                try:
                    await asyncio.wait_for(changed.wait(), contract.KEEPALIVE_S)
                except asyncio.TimeoutError:
                    pass  # nothing new: repeat the latest, so the requester knows the rebuild runs
                changed.clear()
                await replies.send(progress_message(latest[0] if latest else None, time.monotonic() - started))
                await asyncio.sleep(MIN_INTERVAL_S)

        reporter = asyncio.create_task(pump())
        final: dict[str, Any]
        cancelled = False
        try:
            result = await self._run_rebuild(on_progress, request.graceSeconds)
            final = result_message(result, self._instance)
            log.info("rebuild done: set %s is live", result.view_set)
        except RebuildRefused as exc:
            final = error_message(contract.REFUSED, contract.REBUILD_RUNNING, f"rebuild refused: {exc}",
                                  self._instance)
            log.info("rebuild refused: %s", exc)
        except asyncio.CancelledError:
            cancelled = True
            final = error_message(contract.FAILED, contract.REBUILD_FAILED,
                                  f"the projector replica {self._instance} running the rebuild is stopping; "
                                  f"{_state(latest)}; run it again", self._instance)
        except Exception as exc:  # noqa: BLE001 - reported to the requester, logged
            log.exception("rebuild failed")
            final = error_message(contract.FAILED, contract.REBUILD_FAILED,
                                  f"rebuild failed: {type(exc).__name__}: {exc}; {_state(latest)}; fix the cause "
                                  "and run it again", self._instance)
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
        if latest:
            await replies.send(progress_message(latest[0], time.monotonic() - started))
        await replies.send(final)
        if cancelled:
            raise asyncio.CancelledError


def _state(latest: list[Progress]) -> str:
    """What a rebuild that stopped leaves behind, from the last phase it reported."""
    if latest and latest[0].phase == "verify":
        return f"set {latest[0].view_set} was already live (its last check did not run)"
    return "the live views are unchanged"
