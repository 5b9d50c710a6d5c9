"""cqrsctl: send commands, run queries and tail events from the shell."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from .client import DEFAULT_AMQP_URL, EVENTS_EXCHANGE, CqrsClient, _safe
from .errors import BrokerUnavailable, CqrsError, ReplyError, RequestTimeout, ServiceUnavailable

app = typer.Typer(help="Client for the CQRS order system (commands, queries, live events).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
events_app = typer.Typer(help="Watch events on cqrs.events.", no_args_is_help=True)
app.add_typer(events_app, name="events")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

EXIT_REJECTED = 1
EXIT_BROKER = 2

AmqpUrl = typer.Option(DEFAULT_AMQP_URL, "--amqp-url", envvar="AMQP_URL", help="RabbitMQ URL (env AMQP_URL).")
AsJson = typer.Option(False, "--json", help="Print the raw reply as one JSON line (for scripts).")


def _quiet_libraries() -> None:
    for name in ("aio_pika", "aiormq", "pamqp"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    logging.getLogger().addHandler(logging.NullHandler())


def _print(obj: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    else:
        out.print_json(data=obj)


def _run(coro: Any, amqp_url: str, as_json: bool) -> None:
    """Runs one client call; maps failures to one-line messages and exit codes."""
    _quiet_libraries()
    try:
        result = asyncio.run(coro)
    except BrokerUnavailable as exc:
        err.print(f"[red]error:[/red] {exc}; set --amqp-url or AMQP_URL", soft_wrap=True)
        raise typer.Exit(EXIT_BROKER)
    except (RequestTimeout, ServiceUnavailable) as exc:
        err.print(f"[red]error:[/red] {exc} (is the service running on {_safe(amqp_url)}?)", soft_wrap=True)
        raise typer.Exit(EXIT_BROKER)
    except ReplyError as exc:
        if as_json:
            _print(exc.reply, True)
        else:
            e = exc.error
            err.print(f"[red]{e.get('code', exc.code)}[/red]: {e.get('message', '')}", soft_wrap=True)
            for d in exc.details:
                err.print(f"  {d.get('field', '')}: {d.get('message', '')}", soft_wrap=True)
        raise typer.Exit(EXIT_REJECTED)
    except CqrsError as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(EXIT_REJECTED)
    except KeyboardInterrupt:
        raise typer.Exit(130)
    if result is not None:
        _print(result, as_json)


def _load_json_object(text: str, option: str) -> dict[str, Any]:
    """A JSON object given inline, as @file.json, or as - (standard input)."""
    try:
        if text == "-":
            text = sys.stdin.read()
        elif text.startswith("@"):
            text = Path(text[1:]).read_text()
        obj = json.loads(text)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"not JSON or unreadable: {exc}", param_hint=option)
    if not isinstance(obj, dict):
        raise typer.BadParameter("must be a JSON object", param_hint=option)
    return obj


def _load_data(data: str) -> dict[str, Any]:
    return _load_json_object(data, "--data")


def _pairs(items: list[str], strings: set[str], option: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r} is not k=v", param_hint=option)
        k, v = item.split("=", 1)
        out[k] = _parse_value(v, keep_string=k in strings)
    return out


def _string_params(query_type: str) -> set[str]:
    return _string_fields(query_type, "query")


def _string_fields(type_name: str, kind: str) -> set[str]:
    """Fields of a command's data / a query's parameters that are strings in the contract (ids,
    dates, money, text): their k=v values are taken as text (orderId=123 is the id "123")."""
    from cqrs_shared.contracts.commands import COMMANDS
    from cqrs_shared.contracts.queries import QUERIES

    model = (COMMANDS if kind == "command" else QUERIES).get(type_name)
    if model is None:
        return set()
    props = model.model_json_schema().get("properties", {})
    return {name for name, sch in props.items()
            if sch.get("type") == "string" or any(a.get("type") == "string" for a in sch.get("anyOf", []))}


def _parse_value(v: str, keep_string: bool = False) -> Any:
    """k=v: v is taken as JSON when it parses (numbers, true/false, null), else as a string;
    always as a string for string parameters (so orderId=123 is the id "123")."""
    if keep_string:
        return v
    try:
        return json.loads(v)
    except ValueError:
        return v


@app.command()
def command(
    command_type: str = typer.Argument(..., help="e.g. PlaceOrder"),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="JSON object, @file.json, or - for standard input"),
    field: list[str] = typer.Option([], "--field", "-f",
                                    help="k=v (repeatable) set on top of --data; v parsed as JSON when possible, "
                                         "kept as text for text fields"),
    user_id: str = typer.Option(..., "--user-id", "-u", help="userId of the envelope"),
    role: list[str] = typer.Option([], "--role", "-r", help="role (repeatable): admin, customer"),
    expected_version: Optional[int] = typer.Option(None, "--expected-version"),
    command_id: Optional[str] = typer.Option(None, "--command-id", help="idempotency key (default: a new UUID)"),
    timeout: float = typer.Option(10.0, "--timeout"),
    no_validate: bool = typer.Option(False, "--no-validate", help="send without checking data locally"),
    amqp_url: str = AmqpUrl,
    as_json: bool = AsJson,
) -> None:
    """Send a command; prints the reply. Exit 1 when rejected, 2 when the broker/service is unreachable."""
    if data is None and not field:
        raise typer.BadParameter("give the command's data with --data and/or --field k=v", param_hint="--data")
    payload = _load_data(data) if data is not None else {}
    payload.update(_pairs(field, _string_fields(command_type, "command"), "--field"))

    async def go() -> dict[str, Any]:
        from .client import validate_command
        if not no_validate:
            validate_command(command_type, payload)  # before connecting: fails fast offline
        async with CqrsClient(amqp_url, client_id="cqrsctl") as c:
            return await c.send(command_type, payload, user_id=user_id, roles=role, expected_version=expected_version,
                                command_id=command_id, timeout=timeout, validate=False)

    _run(go(), amqp_url, as_json)


@app.command()
def query(
    query_type: str = typer.Argument(..., help="e.g. GetOrderDetails"),
    param: list[str] = typer.Option([], "--param", "-p", help="k=v (repeatable); v parsed as JSON when possible"),
    params_json: Optional[str] = typer.Option(None, "--params", "-P",
                                              help="all parameters as a JSON object, @file.json, or - (stdin); "
                                                   "--param values are added on top"),
    min_position: Optional[int] = typer.Option(None, "--min-position", help="wait until the views reached it"),
    max_wait_ms: Optional[int] = typer.Option(None, "--max-wait-ms", help="how long to wait for --min-position"),
    timeout: Optional[float] = typer.Option(None, "--timeout"),
    no_validate: bool = typer.Option(False, "--no-validate", help="send without checking parameters locally"),
    amqp_url: str = AmqpUrl,
    as_json: bool = AsJson,
) -> None:
    """Run a query; prints the reply (result and position). Exit 1 on an error reply, 2 when unreachable."""
    params: dict[str, Any] = _load_json_object(params_json, "--params") if params_json is not None else {}
    params.update(_pairs(param, _string_params(query_type), "--param"))

    async def go() -> dict[str, Any]:
        from .client import validate_query
        if not no_validate:
            validate_query(query_type, params)  # before connecting: fails fast offline
        async with CqrsClient(amqp_url, client_id="cqrsctl") as c:
            return await c.query(query_type, params, min_position=min_position, max_wait_ms=max_wait_ms,
                                 timeout=timeout, validate=False)

    _run(go(), amqp_url, as_json)


@events_app.command("tail")
def events_tail(
    pattern: list[str] = typer.Option(["#"], "--pattern", help="topic binding, e.g. order.* (repeatable)"),
    count: Optional[int] = typer.Option(None, "--count", "-n", help="stop after N events"),
    amqp_url: str = AmqpUrl,
    as_json: bool = AsJson,
) -> None:
    """Print events live from cqrs.events (an exclusive, auto-deleted queue of its own)."""

    async def go() -> None:
        import aio_pika

        async with CqrsClient(amqp_url, client_id="cqrsctl") as c:
            ch = await c.connection.channel()
            ex = await ch.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
            q = await ch.declare_queue("", exclusive=True, auto_delete=True)
            for pat in pattern:
                await q.bind(ex, pat)
            if not as_json:
                err.print(f"listening on {EVENTS_EXCHANGE} ({', '.join(pattern)}); Ctrl-C to stop")
            else:  # lets scripts know the binding exists
                sys.stderr.write("ready\n")
                sys.stderr.flush()
            seen = 0
            async with q.iterator() as it:
                async for msg in it:
                    async with msg.process():
                        try:
                            ev = json.loads(msg.body)
                        except ValueError:
                            ev = {"raw": msg.body.decode(errors="replace")}
                    if as_json:
                        _print(ev, True)
                    else:
                        out.print(f"[bold]{msg.routing_key}[/bold] pos={ev.get('position')} "
                                  f"{ev.get('aggregateId')} v{ev.get('version')} {ev.get('timestamp')}")
                        out.print_json(data=ev.get("data"))
                    seen += 1
                    if count is not None and seen >= count:
                        return

    _run(go(), amqp_url, as_json)


dlq_app = typer.Typer(help="Inspect, replay and purge dead-letter queues.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


def _dlq_name(queue: str) -> str:
    return queue if queue.endswith(".dlq") else f"{queue}.dlq"


@dlq_app.command("list")
def dlq_list(amqp_url: str = AmqpUrl, as_json: bool = AsJson) -> None:
    """Count dead letters per queue, grouped by error."""
    from cqrs_shared.messaging import dlq

    async def go() -> Any:
        async with CqrsClient(amqp_url, client_id="cqrsctl") as c:
            return await dlq.summary(c.connection)

    _quiet_libraries()
    try:
        summaries = asyncio.run(go())
    except BrokerUnavailable as exc:
        err.print(f"[red]error:[/red] {exc}; set --amqp-url or AMQP_URL", soft_wrap=True)
        raise typer.Exit(EXIT_BROKER)
    if as_json:
        _print([{"queue": s.queue, "count": s.count, "byError": dict(s.by_error)} for s in summaries], True)
        return
    from rich.table import Table

    table = Table(title="Dead-letter queues")
    table.add_column("queue")
    table.add_column("count", justify="right")
    table.add_column("errors")
    for s in summaries:
        table.add_row(s.queue, str(s.count), "\n".join(f"{n} x {e}" for e, n in s.by_error.most_common()))
    out.print(table)


@dlq_app.command("show")
def dlq_show(queue: str = typer.Argument(..., help="queue or its .dlq"),
             index: Optional[int] = typer.Option(None, "--index", "-i", help="only the message at this position"),
             amqp_url: str = AmqpUrl, as_json: bool = AsJson) -> None:
    """Show dead letters (headers and body) without removing them."""
    from cqrs_shared.messaging import dlq

    async def go() -> Any:
        async with CqrsClient(amqp_url, client_id="cqrsctl") as c:
            letters = [d.as_dict() for d in await dlq.browse(c.connection, _dlq_name(queue))]
        return letters if index is None else letters[index:index + 1]

    _run(go(), amqp_url, as_json)


@dlq_app.command("replay")
def dlq_replay(queue: str = typer.Argument(..., help="queue or its .dlq"),
               error: Optional[str] = typer.Option(None, "--error", help="only messages whose error contains this"),
               message_id: Optional[str] = typer.Option(None, "--message-id", help="only this message id"),
               limit: Optional[int] = typer.Option(None, "--limit", help="at most N messages"),
               amqp_url: str = AmqpUrl, as_json: bool = AsJson) -> None:
    """Move dead letters back to the queue they came from (ids kept: idempotency holds)."""
    from cqrs_shared.messaging import dlq

    def select(d: Any) -> bool:
        return (error is None or error in d.error) and (message_id is None or d.message_id == message_id)

    async def go() -> Any:
        async with CqrsClient(amqp_url, client_id="cqrsctl") as c:
            return {"replayed": await dlq.replay(c.connection, _dlq_name(queue), select, limit)}

    _run(go(), amqp_url, as_json)


@dlq_app.command("purge")
def dlq_purge(queue: str = typer.Argument(..., help="queue or its .dlq"),
              yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
              amqp_url: str = AmqpUrl, as_json: bool = AsJson) -> None:
    """Delete every message of a dead-letter queue."""
    from cqrs_shared.messaging import dlq

    if not yes and not typer.confirm(f"purge {_dlq_name(queue)}?"):
        raise typer.Exit(1)

    async def go() -> Any:
        async with CqrsClient(amqp_url, client_id="cqrsctl") as c:
            return {"purged": await dlq.purge(c.connection, _dlq_name(queue))}

    _run(go(), amqp_url, as_json)


@app.command()
def asyncapi(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write to this file (default: stdout)"),
    check: bool = typer.Option(False, "--check", help="exit 1 when --output differs from what the code generates"),
) -> None:
    """Print the AsyncAPI 3.0 document of every channel (generated from the contract models)."""
    from cqrs_shared.asyncapi import render

    text = render()
    if check:
        if output is None:
            raise typer.BadParameter("--check needs --output", param_hint="--check")
        if not output.exists() or output.read_text() != text:
            err.print(f"[red]error:[/red] {output} is out of date: run `make asyncapi` and commit it", soft_wrap=True)
            raise typer.Exit(1)
        return
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        err.print(f"wrote {output}")


@app.command()
def status(
    amqp_url: str = AmqpUrl,
    command_url: str = typer.Option("http://127.0.0.1:8081", "--command-url", envvar="CQRS_COMMAND_SERVICE_URL",
                                    help="command service's HTTP port (/readyz, /metrics); empty skips it"),
    projector_url: str = typer.Option("http://127.0.0.1:8082", "--projector-url", envvar="CQRS_PROJECTOR_SERVICE_URL",
                                      help="projector service's HTTP port; empty skips it"),
    query_url: str = typer.Option("http://127.0.0.1:8083", "--query-url", envvar="CQRS_QUERY_SERVICE_URL",
                                  help="query service's HTTP port; empty skips it"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (for scripts)."),
) -> None:
    """The system at a glance: each service's health, queue depths, DLQ counts, outbox
    backlog and projection lag. Exit code 0 when every service is ready, 1 when one is
    not (or cannot be reached), 2 when the broker cannot be reached."""
    from . import status as st

    urls = {"command-service": command_url, "projector-service": projector_url, "query-service": query_url}

    async def go() -> dict[str, Any]:
        async with CqrsClient(amqp_url, client_id="cqrsctl") as c:
            return await st.collect(c.connection, urls)

    _quiet_libraries()
    try:
        report = asyncio.run(go())
    except BrokerUnavailable as exc:
        if as_json:
            _print({"error": str(exc), "broker": _safe(amqp_url)}, True)
        err.print(f"[red]error:[/red] {exc}; set --amqp-url or AMQP_URL", soft_wrap=True)
        raise typer.Exit(EXIT_BROKER)
    report = {"broker": _safe(amqp_url), **report}
    if as_json:
        _print(report, True)
    else:
        _print_status(report)
    if not st.healthy(report):
        raise typer.Exit(1)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _print_status(report: dict[str, Any]) -> None:
    from rich.table import Table

    services = Table(title=f"Services (broker {report['broker']})")
    for col in ("service", "health", "details", "url"):
        services.add_column(col)
    for s in report["services"]:
        if not s["reachable"]:
            health = f"[red]unreachable[/red] ({s['error']})"
        elif s["ready"]:
            health = "[green]ready[/green]"
        else:
            health = f"[red]not ready[/red]: {', '.join(s['failing'])}"
        details = []
        if "outboxBacklog" in s:
            details.append(f"outbox backlog {_fmt(s['outboxBacklog'])} (oldest {_fmt(s['outboxOldestAgeSeconds'])} s), "
                           f"head position {_fmt(s['eventStorePosition'])}")
        for p in s.get("projections", []):
            details.append(f"view {p['view']}: position {_fmt(p.get('position'))}, lag {_fmt(p.get('lagEvents'))} "
                           f"events / {_fmt(p.get('lagSeconds'))} s")
        if "viewPosition" in s:
            details.append(f"views at position {_fmt(s['viewPosition'])}")
        services.add_row(s["service"], health, "\n".join(details), s["url"])
    out.print(services)
    queues = Table(title="Queues")
    for col in ("queue", "ready", "consumers", "retrying", "dead letters"):
        queues.add_column(col, justify="left" if col == "queue" else "right")
    for q in report["queues"]:
        if not q["exists"]:
            queues.add_row(q["queue"], "[yellow]not declared[/yellow]", "-", "-", "-")
            continue
        dl = q["deadLetters"]
        queues.add_row(q["queue"], str(q["messages"]),
                       str(q["consumers"]) if q["consumers"] else "[red]0[/red]", str(q["retrying"]),
                       f"[red]{dl}[/red]" if dl else "0")
    out.print(queues)


queues_app = typer.Typer(help="Bring the broker's queues to what this version declares.", no_args_is_help=True)
app.add_typer(queues_app, name="queues")


@queues_app.command("migrate")
def queues_migrate(dry_run: bool = typer.Option(False, "--dry-run", help="only say which queues differ"),
                   amqp_url: str = AmqpUrl, as_json: bool = AsJson) -> None:
    """Rebuild queues declared with other arguments by an older version (e.g. classic ->
    quorum), moving their messages; run it with the services stopped."""
    from cqrs_shared.messaging import migrate

    async def go() -> Any:
        async with CqrsClient(amqp_url, client_id="cqrsctl") as c:
            done = await migrate.migrate(c.connection, dry_run=dry_run)
        return [{"queue": m.queue, "state": m.state, "moved": m.moved} for m in done]

    _run(go(), amqp_url, as_json)


# `cqrsctl rebuild` lives in its own module (cqrs_client/rebuild.py)
from .rebuild import rebuild as _rebuild  # noqa: E402

app.command("rebuild")(_rebuild)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
