"""`cqrsctl rebuild`: asks a running projector to rebuild the views, over AMQP only.

The request goes to `cqrs.internal` with routing key `projector.rebuild`; the projector
replica that takes it runs the rebuild in-process (the same code as `projector-service
rebuild`) and reports to this client's direct reply-to queue with the request's
correlation id: `accepted`, `progress` messages, then one `result`
(cqrs_shared.contracts.rebuild; docs/protocol.md, "Rebuild requests").

The request carries an `x-deadline` and a TTL of START_TIMEOUT_S: when no projector takes it
by then, it expires unseen and this client says that no projector answered. Once it is taken,
the rebuild does not depend on this client: stopping it (Ctrl-C, --timeout, a lost connection)
leaves the rebuild running to its end.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import typer

from cqrs_shared.contracts import rebuild as contract
from cqrs_shared.topology import INTERNAL_EXCHANGE, REBUILD_REQUEST_ROUTING_KEY

from .client import DEFAULT_AMQP_URL, REPLY_TO, CqrsClient, _safe
from .errors import BrokerUnavailable, CqrsError, ServiceUnavailable

START_TIMEOUT_S = 15.0  # for a projector to take the request
SILENCE_S = 30.0  # without any message from the projector running the rebuild (it reports every few s)

EXIT_OK = 0
EXIT_FAILED = 1  # the rebuild failed, or the request was invalid
EXIT_UNREACHABLE = 2  # broker not reachable, or no projector took the request
EXIT_REFUSED = 3  # another rebuild is running
EXIT_STOPPED_WAITING = 4  # --timeout or silence: the rebuild may still be running


class NotTaken(CqrsError):
    """No projector took the request (none runs on this vhost, or all are stuck)."""

    code = "unavailable"


class StoppedWaiting(CqrsError):
    """The client stopped waiting for the result (the rebuild may go on)."""

    code = "timeout"


async def request_rebuild(client: CqrsClient, on_message: Callable[[dict[str, Any]], None], *,
                          grace_seconds: float | None = None, timeout: float | None = None,
                          start_timeout: float = START_TIMEOUT_S, silence_s: float = SILENCE_S) -> dict[str, Any]:
    """Sends one rebuild request and passes every message about it to `on_message`; returns
    the final `result` message (whatever its status). Raises ServiceUnavailable (no projector
    has ever run on this vhost), NotTaken, StoppedWaiting."""
    import aio_pika
    import aio_pika.exceptions

    channel = await client.connection.channel(publisher_confirms=True, on_return_raises=True)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    correlation_id = uuid.uuid4().hex

    async def on_reply(message: Any) -> None:
        if message.correlation_id != correlation_id:
            return
        try:
            body = json.loads(message.body)
        except ValueError:
            return
        if isinstance(body, dict):
            inbox.put_nowait(body)

    try:
        reply_queue = await channel.get_queue(REPLY_TO, ensure=False)
        await reply_queue.consume(on_reply, no_ack=True)
        request = contract.RebuildRequest(graceSeconds=grace_seconds)
        deadline = datetime.now(timezone.utc) + timedelta(seconds=start_timeout)
        try:
            exchange = await channel.get_exchange(INTERNAL_EXCHANGE, ensure=False)
            await exchange.publish(
                aio_pika.Message(request.model_dump_json(exclude_none=True).encode(),
                                 content_type="application/json", correlation_id=correlation_id, reply_to=REPLY_TO,
                                 headers={"x-deadline": deadline.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"},
                                 expiration=start_timeout, delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT),
                routing_key=REBUILD_REQUEST_ROUTING_KEY, mandatory=True)
        except aio_pika.exceptions.DeliveryError as exc:  # returned: the request queue does not exist
            raise ServiceUnavailable(f"no queue takes rebuild requests on {INTERNAL_EXCHANGE} "
                                     f"({REBUILD_REQUEST_ROUTING_KEY}): has projector-service ever started on "
                                     "this vhost, in a version that takes them?") from exc
        except aio_pika.exceptions.ChannelClosed as exc:
            raise ServiceUnavailable(f"cannot publish to {INTERNAL_EXCHANGE!r}: {exc} (has projector-service "
                                     "ever started on this vhost, and may this user publish there?)") from exc

        started = last_heard = time.monotonic()
        taken = False
        while True:
            now = time.monotonic()
            wait = (silence_s - (now - last_heard)) if taken else (start_timeout - (now - started))
            if timeout is not None:
                wait = min(wait, timeout - (now - started))
            try:
                message = await asyncio.wait_for(inbox.get(), max(wait, 0.0))
            except asyncio.TimeoutError:
                now = time.monotonic()
                if timeout is not None and now - started >= timeout - 0.001:
                    raise StoppedWaiting(f"no result within {timeout:g} s") from None
                if not taken:
                    raise NotTaken(f"no projector-service took the rebuild request within {start_timeout:g} s "
                                   "(is projector-service running?); the request expires unseen") from None
                raise StoppedWaiting(f"no word from the projector running the rebuild for {silence_s:g} s "
                                     "(stopped or cut off?)") from None
            last_heard = time.monotonic()
            taken = True
            on_message(message)
            if message.get("type") == "result":
                return message
    finally:
        if not channel.is_closed:
            try:
                await channel.close()
            except Exception:  # noqa: BLE001 - the connection may be gone
                pass


class _Display:
    """Human output: a bar on a terminal (stderr), else one line per progress message."""

    def __init__(self, err: Any) -> None:
        self._err = err
        self._bar: Any = None
        self._task: Any = None
        self.instance: str | None = None
        if err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]:>8,.0f} events/s"), TimeElapsedColumn(),
                                 console=err)
            self._bar.start()

    def __call__(self, m: dict[str, Any]) -> None:
        kind = m.get("type")
        if kind == "accepted":
            self.instance = m.get("instance")
            self._line(f"rebuild accepted by projector {self.instance}")
        elif kind == "progress":
            watermark, target = int(m.get("watermark") or 0), int(m.get("target") or 0)
            total = max(target, watermark, 1)
            desc = f"set {m.get('viewSet') or '?'} {m.get('phase')}"
            rate = float(m.get("rate") or 0.0)
            if self._bar is not None:
                if self._task is None:
                    self._task = self._bar.add_task(desc, total=total, rate=rate)
                self._bar.update(self._task, description=desc, completed=min(watermark, total), total=total,
                                 rate=rate)
            else:
                self._line(f"rebuild set {m.get('viewSet') or '?'} [{m.get('phase')}] watermark {watermark}/{total} "
                           f"({100 * min(watermark, total) // total}%), {m.get('applied', 0)} events applied, "
                           f"{rate:,.0f} events/s, {float(m.get('elapsed') or 0):.1f} s")

    def _line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, highlight=False, markup=False)
        else:
            self._err.print(text, highlight=False, soft_wrap=True, markup=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _json_line(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def rebuild(
    views: str = typer.Argument("all", help="Which views. Only `all`: the views share one watermark and are "
                                            "rebuilt and switched together."),
    grace: Optional[float] = typer.Option(None, "--grace", help="seconds the previous views are still written after "
                                                                "the switch (default: the projector's "
                                                                "REBUILD_GRACE_SECONDS, 30)"),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="stop waiting after this many seconds "
                                                                    "(default: until the result); the rebuild "
                                                                    "goes on"),
    start_timeout: float = typer.Option(START_TIMEOUT_S, "--start-timeout",
                                        help="seconds for a running projector to take the request; it expires "
                                             "unseen after that"),
    amqp_url: str = typer.Option(DEFAULT_AMQP_URL, "--amqp-url", envvar="AMQP_URL", help="RabbitMQ URL (env AMQP_URL)."),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line: accepted, each progress report, "
                                                       "the result (for scripts)"),
) -> None:
    """Rebuild the views from the whole history while queries keep being answered, then
    switch atomically. Runs in a running projector (over RabbitMQ only; no database access
    needed). Exit 0 switched, 1 failed, 2 broker or projector unreachable, 3 refused (another
    rebuild runs), 4 stopped waiting (--timeout; the rebuild goes on)."""
    from rich.markup import escape

    from .cli import _quiet_libraries, err, out

    if views != "all":
        raise typer.BadParameter(f"{views!r}: only `all` can be rebuilt (the views share one watermark and are "
                                 "switched together; see docs/operations.md)", param_hint="VIEWS")
    if grace is not None and grace < 0:
        raise typer.BadParameter("must be >= 0", param_hint="--grace")
    if start_timeout <= 0:
        raise typer.BadParameter("must be > 0", param_hint="--start-timeout")
    if timeout is not None and timeout <= 0:
        raise typer.BadParameter("must be > 0", param_hint="--timeout")
    display = None if as_json else _Display(err)
    taken_by: list[str] = []

    def on_message(m: dict[str, Any]) -> None:
        if m.get("type") == "accepted" and m.get("instance"):
            taken_by.append(str(m["instance"]))
        if as_json:
            _json_line(m)
        elif display is not None:
            display(m)

    async def go() -> dict[str, Any]:
        async with CqrsClient(amqp_url, client_id="cqrsctl") as c:
            return await request_rebuild(c, on_message, grace_seconds=grace, timeout=timeout,
                                         start_timeout=start_timeout)

    def still_running() -> str:
        where = f"projector {taken_by[0]}" if taken_by else "the projector that took it"
        return (f"the rebuild goes on in {where}: follow it with `cqrsctl status` or the projector's logs "
                "(a second request is refused while it runs)")

    def fail(code: int, status: str, message: str) -> None:
        if display is not None:
            display.close()
        if as_json:
            _json_line({"type": "result", "status": status, "error": {"code": status, "message": message}})
        err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
        raise typer.Exit(code)

    _quiet_libraries()
    try:
        result = asyncio.run(go())
    except BrokerUnavailable as exc:
        if display is not None:
            display.close()
        err.print(f"[red]error:[/red] {escape(str(exc))}; set --amqp-url or AMQP_URL", soft_wrap=True)
        raise typer.Exit(EXIT_UNREACHABLE)
    except (ServiceUnavailable, NotTaken) as exc:
        fail(EXIT_UNREACHABLE, "unavailable", f"{exc} (broker {_safe(amqp_url)})")
    except StoppedWaiting as exc:
        fail(EXIT_STOPPED_WAITING, "timeout", f"{exc}; {still_running()}")
    except KeyboardInterrupt:
        if display is not None:
            display.close()
        err.print(f"stopped waiting; {still_running()}", soft_wrap=True, markup=False)
        raise typer.Exit(130)
    if display is not None:
        display.close()
    status = result.get("status")
    if status == contract.SWITCHED:
        if not as_json:
            dropped = result.get("dropped") or []
            out.print(f"switched: set {result.get('viewSet') or 'default'} is live (was "
                      f"{result.get('previous') or 'default'}); {result.get('applied')} events applied in "
                      f"{float(result.get('elapsed') or 0):.1f} s ({float(result.get('rate') or 0):,.0f} events/s), "
                      f"watermark {result.get('watermark')}"
                      + (f"; dropped old sets {', '.join(d or 'default' for d in dropped)}" if dropped else ""),
                      soft_wrap=True, highlight=False, markup=False)
        return
    message = (result.get("error") or {}).get("message") or f"rebuild {status}"
    if not as_json:
        err.print(f"[red]{escape(str(status))}:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(EXIT_REFUSED if status == contract.REFUSED else EXIT_FAILED)
