"""AsyncAPI 3.0 document of the public wire contract, generated from the code.

Exchanges, queues and routing keys come from `cqrs_shared.topology`; every payload schema
is the JSON Schema of a pydantic model in `cqrs_shared.contracts`. The document describes
the system (the three services together) as one application: it receives commands and
queries and answers each on the request's `reply_to`, and it sends events.

    python -m cqrs_shared.asyncapi [--check] [PATH]     # default PATH: docs/asyncapi.yaml

`--check` exits 1 when PATH differs from what the code generates (the CI check).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from cqrs_shared.contracts import envelopes as env
from cqrs_shared.contracts import errors as codes
from cqrs_shared.contracts.commands import COMMANDS
from cqrs_shared.contracts.events import EVENT_DATA, EVENT_TYPES
from cqrs_shared.contracts.queries import QUERIES, RESULTS
from cqrs_shared.topology import (COMMAND_QUEUE, COMMANDS_EXCHANGE, EVENTS_EXCHANGE, PROJECTOR_QUEUE, QUERIES_EXCHANGE,
                                  QUERY_QUEUE)

ASYNCAPI_VERSION = "3.0.0"
CONTRACT_VERSION = "1.0.0"
BINDING_VERSION = "0.3.0"
DEFAULT_PATH = Path("docs/asyncapi.yaml")
PUBLIC_QUEUES = (COMMAND_QUEUE, QUERY_QUEUE, PROJECTOR_QUEUE)

COMMAND_ERRORS = (codes.VALIDATION_ERROR, codes.NOT_FOUND, codes.INSUFFICIENT_STOCK, codes.CREDIT_LIMIT_EXCEEDED,
                  codes.INVALID_TRANSITION, codes.CONCURRENCY_CONFLICT, codes.FORBIDDEN, codes.DUPLICATE,
                  codes.INTERNAL_ERROR, codes.UNAVAILABLE)
QUERY_ERRORS = (codes.VALIDATION_ERROR, codes.NOT_FOUND, codes.STALE, codes.INTERNAL_ERROR)


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema_ref(name: str) -> dict[str, str]:
    return _ref("schemas", name)


def _exchange(name: str, type_: str) -> dict[str, Any]:
    return {"name": name, "type": type_, "durable": True, "autoDelete": False, "vhost": "/"}


def _routing_key_binding(exchange: str, type_: str) -> dict[str, Any]:
    return {"amqp": {"is": "routingKey", "exchange": _exchange(exchange, type_), "bindingVersion": BINDING_VERSION}}


def _queue_binding(name: str) -> dict[str, Any]:
    return {"amqp": {"is": "queue", "queue": {"name": name, "durable": True, "exclusive": False, "autoDelete": False,
                                               "vhost": "/"}, "bindingVersion": BINDING_VERSION}}


class _Schema(GenerateJsonSchema):
    """pydantic's JSON Schema without the titles it derives from field names ("Commandid")."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _schemas() -> dict[str, Any]:
    """JSON Schemas of every contract model, sharing one `#/components/schemas` namespace."""
    models: list[type[BaseModel]] = [env.CommandEnvelope, env.CommandReply, env.QueryEnvelope, env.QueryReply,
                                     env.EventEnvelope, env.ErrorBody, env.Metadata]
    models += [*COMMANDS.values(), *QUERIES.values(), *RESULTS.values(), *EVENT_DATA.values()]
    keyed = [(m, "validation") for m in dict.fromkeys(models)]
    _, top = models_json_schema(keyed, ref_template="#/components/schemas/{model}", schema_generator=_Schema)
    schemas: dict[str, Any] = top.get("$defs", {})
    clash = sorted(name for name in schemas if "__" in name)
    if clash:  # pydantic qualifies the names of different models with the same class name
        raise RuntimeError(f"contract model names must be unique; pydantic renamed: {clash}")
    return dict(sorted(schemas.items()))


def _with(base: str, properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """`base` narrowed: the listed properties replaced by more precise schemas."""
    extra: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        extra["required"] = required
    return {"allOf": [_schema_ref(base), extra]}


CORRELATION = {"location": "$message.header#/correlation_id",
               "description": "AMQP property correlation_id: the reply carries the request's value."}
REPLY_ADDRESS = {"location": "$message.header#/reply_to",
                 "description": "AMQP property reply_to of the request: a queue the client owns, or "
                                "amq.rabbitmq.reply-to (direct reply-to). Without reply_to the request is "
                                "processed and no reply is sent."}
TRACE_HEADERS = {
    "traceparent": {"type": "string", "description": "optional; W3C trace context: the services continue this "
                                                    "trace (docs/operations.md, Tracing)"},
    "tracestate": {"type": "string", "description": "optional; W3C trace context vendor data"},
}
DEADLINE_HEADERS = {
    "type": "object",
    "properties": {"x-deadline": {
        "type": "string", "format": "date-time",
        "description": "optional; ISO 8601 UTC. A command taken from the queue after this time is not executed "
                       "and is answered `unavailable`."}, **TRACE_HEADERS},
}
QUERY_HEADERS = {"type": "object", "properties": dict(TRACE_HEADERS)}
EVENT_HEADERS = {
    "type": "object",
    "required": ["x-aggregate-id", "x-position"],
    "properties": {"x-aggregate-id": {"type": "string", "description": "aggregateId of the event"},
                   "x-position": {"type": "integer", "description": "global position of the event"},
                   **TRACE_HEADERS},
}
DEAD_LETTER_HEADERS = {
    "type": "object",
    "description": "Set by the service that gave up; or, for a message the broker set aside after "
                   "20 deliveries without acknowledgement (quorum queue delivery limit: its consumer "
                   "kept crashing), the broker's x-death headers with x-first-death-reason delivery_limit.",
    "anyOf": [{"required": ["x-error", "x-error-kind", "x-service", "x-attempts", "x-original-queue"]},
              {"required": ["x-first-death-reason", "x-first-death-queue"]}],
    "properties": {
        "x-first-death-reason": {"type": "string", "description": "delivery_limit"},
        "x-first-death-queue": {"type": "string", "description": "where `cqrsctl dlq replay` sends it back"},
        "x-error": {"type": "string", "description": "the error that stopped processing"},
        "x-error-kind": {"type": "string", "enum": ["permanent", "retries-exhausted"]},
        "x-service": {"type": "string", "description": "the service that gave up"},
        "x-attempts": {"type": "integer", "description": "number of attempts made"},
        "x-first-failure-at": {"type": "string", "format": "date-time"},
        "x-last-error": {"type": "string"},
        "x-original-queue": {"type": "string", "description": "where `cqrsctl dlq replay` sends it back"},
        "x-original-routing-key": {"type": "string"},
    },
}


def build() -> dict[str, Any]:
    """The AsyncAPI document as plain data (deterministic: same code, same document)."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}

    # --- replies: the address is whatever the request's reply_to named -------------------
    messages["CommandReply"] = {
        "name": "CommandReply", "title": "Command reply", "contentType": "application/json",
        "correlationId": _ref("correlationIds", "requestCorrelation"),
        "summary": "Exactly one reply per command; the first reply to a commandId is stored and repeated.",
        "description": "status accepted: aggregateId, version and position (for read-your-writes) are set. "
                       "status rejected: error.code is one of " + ", ".join(COMMAND_ERRORS) + ".",
        "payload": _with("CommandReply", {"error": {"anyOf": [_with("ErrorBody", {"code": {"enum": list(COMMAND_ERRORS)}}),
                                                              {"type": "null"}]}}),
    }
    channels["commandReplies"] = {
        "address": None, "title": "Command replies",
        "description": "The queue named by the command's reply_to (e.g. amq.rabbitmq.reply-to).",
        "messages": {"CommandReply": _ref("messages", "CommandReply")},
    }
    channels["queryReplies"] = {
        "address": None, "title": "Query replies",
        "description": "The queue named by the query's reply_to (e.g. amq.rabbitmq.reply-to).",
        "messages": {},
    }

    # --- commands --------------------------------------------------------------------------
    for ctype, model in COMMANDS.items():
        name = f"{ctype}Command"
        messages[name] = {
            "name": ctype, "title": f"{ctype} command", "contentType": "application/json",
            "correlationId": _ref("correlationIds", "requestCorrelation"),
            "headers": _schema_ref("CommandHeaders"),
            "summary": " ".join((model.__doc__ or f"The {ctype} command.").split()),
            "payload": _with("CommandEnvelope", {"commandType": {"const": ctype}, "data": _schema_ref(model.__name__)}),
            "bindings": {"amqp": {"messageType": ctype, "bindingVersion": BINDING_VERSION}},
        }
        cid = f"commands.{ctype}"
        channels[cid] = {
            "address": ctype, "title": f"{ctype} on {COMMANDS_EXCHANGE}",
            "description": f"Publish to exchange `{COMMANDS_EXCHANGE}` (direct) with routing key `{ctype}`; "
                           f"consumed by queue `{COMMAND_QUEUE.name}`.",
            "messages": {name: _ref("messages", name)},
            "bindings": _routing_key_binding(COMMANDS_EXCHANGE, "direct"),
        }
        operations[f"receive{ctype}"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"The command service executes {ctype} and answers one CommandReply.",
            "messages": [{"$ref": f"#/channels/{cid}/messages/{name}"}],
            "reply": {"address": _ref("replyAddresses", "requestReplyTo"), "channel": {"$ref": "#/channels/commandReplies"},
                      "messages": [{"$ref": "#/channels/commandReplies/messages/CommandReply"}]},
        }

    # --- queries ---------------------------------------------------------------------------
    for qtype, model in QUERIES.items():
        name, reply = f"{qtype}Query", f"{qtype}Reply"
        messages[name] = {
            "name": qtype, "title": f"{qtype} query", "contentType": "application/json",
            "correlationId": _ref("correlationIds", "requestCorrelation"),
            "headers": _schema_ref("QueryHeaders"),
            "summary": " ".join((model.__doc__ or f"The {qtype} query.").split()),
            "description": "With minPosition the service waits (at most maxWaitMs, default 5000) until the views have "
                           "applied every event up to it, then answers (or answers stale).",
            "payload": _with("QueryEnvelope", {"queryType": {"const": qtype}, "parameters": _schema_ref(model.__name__)}),
            "bindings": {"amqp": {"messageType": qtype, "bindingVersion": BINDING_VERSION}},
        }
        messages[reply] = {
            "name": reply, "title": f"{qtype} reply", "contentType": "application/json",
            "correlationId": _ref("correlationIds", "requestCorrelation"),
            "summary": "status ok: result set; status error: result null, error.code one of "
                       + ", ".join(QUERY_ERRORS) + ". position is the views' watermark.",
            "payload": _with("QueryReply", {
                "result": {"anyOf": [_schema_ref(RESULTS[qtype].__name__), {"type": "null"}]},
                "error": {"anyOf": [_with("ErrorBody", {"code": {"enum": list(QUERY_ERRORS)}}), {"type": "null"}]}}),
        }
        channels["queryReplies"]["messages"][reply] = _ref("messages", reply)
        cid = f"queries.{qtype}"
        channels[cid] = {
            "address": qtype, "title": f"{qtype} on {QUERIES_EXCHANGE}",
            "description": f"Publish to exchange `{QUERIES_EXCHANGE}` (direct) with routing key `{qtype}`; "
                           f"consumed by queue `{QUERY_QUEUE.name}`.",
            "messages": {name: _ref("messages", name)},
            "bindings": _routing_key_binding(QUERIES_EXCHANGE, "direct"),
        }
        operations[f"receive{qtype}"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"The query service answers {qtype} from the views.",
            "messages": [{"$ref": f"#/channels/{cid}/messages/{name}"}],
            "reply": {"address": _ref("replyAddresses", "requestReplyTo"), "channel": {"$ref": "#/channels/queryReplies"},
                      "messages": [{"$ref": f"#/channels/queryReplies/messages/{reply}"}]},
        }

    # --- events ----------------------------------------------------------------------------
    for aggregate, etypes in EVENT_TYPES.items():
        for etype in etypes:
            name = f"{etype}Event"
            key = f"{aggregate}.{etype}"
            messages[name] = {
                "name": etype, "title": f"{etype} event", "contentType": "application/json",
                "headers": _schema_ref("EventHeaders"),
                "summary": f"Published persistent with message_id = eventId and type = {etype}.",
                "payload": _with("EventEnvelope", {"eventType": {"const": etype}, "aggregateType": {"const": aggregate},
                                                   "data": _schema_ref(EVENT_DATA[etype].__name__)}),
                "bindings": {"amqp": {"messageType": etype, "bindingVersion": BINDING_VERSION}},
            }
            cid = f"events.{key}"
            channels[cid] = {
                "address": key, "title": f"{key} on {EVENTS_EXCHANGE}",
                "description": f"Exchange `{EVENTS_EXCHANGE}` (topic), routing key `{key}`. Bind your own queue "
                               f"(e.g. with `order.*` or `#`). Delivery is at least once (deduplicate by eventId).",
                "messages": {name: _ref("messages", name)},
                "bindings": _routing_key_binding(EVENTS_EXCHANGE, "topic"),
            }
            operations[f"send{etype}"] = {
                "action": "send", "channel": {"$ref": f"#/channels/{cid}"},
                "summary": f"The command service's outbox relay publishes {etype} (publisher confirms).",
                "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": BINDING_VERSION}},
                "messages": [{"$ref": f"#/channels/{cid}/messages/{name}"}],
            }

    # --- dead letters ----------------------------------------------------------------------
    messages["DeadLetter"] = {
        "name": "DeadLetter", "title": "Dead letter", "headers": _schema_ref("DeadLetterHeaders"),
        "summary": "The original message (body and properties unchanged) with headers naming the failure.",
        "payload": {"description": "the original body, whatever it was (it may not be JSON)"},
    }
    for queue in PUBLIC_QUEUES:
        cid = f"dlq.{queue.name}"
        channels[cid] = {
            "address": queue.dlq, "title": f"Dead letters of {queue.name}",
            "description": f"Messages that `{queue.name}` could not process (poison, or transient failures after "
                           f"retries with backoff {', '.join(f'{d} ms' for d in queue.retry_delays_ms)}). "
                           "Inspect and replay with `cqrsctl dlq`.",
            "messages": {"DeadLetter": _ref("messages", "DeadLetter")},
            "bindings": _queue_binding(queue.dlq),
        }
        operations[f"deadLetter.{queue.name}"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"A service moves a message it cannot process from `{queue.name}` here.",
            "messages": [{"$ref": f"#/channels/{cid}/messages/DeadLetter"}],
        }

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "cqrs-orders",
            "version": CONTRACT_VERSION,
            "description": (
                "The public wire contract of the CQRS order system over RabbitMQ (AMQP 0-9-1). Generated by "
                "`python -m cqrs_shared.asyncapi` (`make asyncapi`) from cqrs_shared.topology and the pydantic "
                "models of cqrs_shared.contracts; do not edit by hand. Prose: docs/protocol.md.\n\n"
                "Commands and queries are RPC: publish to the channel's exchange with the routing key, set "
                "content_type application/json, reply_to and correlation_id; exactly one reply comes back on "
                "reply_to with the same correlation_id. A request whose type is unknown reaches the service through "
                f"the exchange's alternate exchange (`{COMMAND_QUEUE.alternate_exchange}`, "
                f"`{QUERY_QUEUE.alternate_exchange}`) and is answered validation_error. Money is a decimal string; "
                "times are ISO 8601 UTC with milliseconds."),
        },
        "defaultContentType": "application/json",
        "servers": {"rabbitmq": {"host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0-9-1",
                                 "description": "Any RabbitMQ; vhost and credentials come from AMQP_URL."}},
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": dict(sorted({**_schemas(), "CommandHeaders": DEADLINE_HEADERS, "EventHeaders": EVENT_HEADERS,
                                    "QueryHeaders": QUERY_HEADERS,
                                    "DeadLetterHeaders": DEAD_LETTER_HEADERS}.items())),
            "messages": dict(sorted(messages.items())),
            "correlationIds": {"requestCorrelation": CORRELATION},
            "replyAddresses": {"requestReplyTo": REPLY_ADDRESS},
        },
    }


def render(doc: dict[str, Any] | None = None) -> str:
    import yaml

    class _NoAliases(yaml.SafeDumper):  # a shared object is written out in full each time, never as &id001
        def ignore_aliases(self, data: Any) -> bool:
            return True

    text = yaml.dump(doc if doc is not None else build(), Dumper=_NoAliases, sort_keys=False, allow_unicode=True,
                     width=100)
    return "# Generated by `make asyncapi` (python -m cqrs_shared.asyncapi); do not edit.\n" + text


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    path = Path(paths[0]) if paths else DEFAULT_PATH
    text = render()
    if check:
        if not path.exists() or path.read_text() != text:
            sys.stderr.write(f"{path} is out of date: run `make asyncapi` and commit it\n")
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
