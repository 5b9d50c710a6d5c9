"""docs/asyncapi.yaml is generated from the code and checked in: this is the CI check that it
matches (regenerate with `make asyncapi`), that it is a well-formed AsyncAPI 3.0 document
describing every channel, and that its schemas accept what the code sends and refuse what the
contract forbids. tests/e2e/test_cli_and_example.py checks it against live traffic."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import pytest
from asyncapi_support import DOC_PATH, document, errors
from jsonschema import Draft7Validator

from cqrs_client import command_body, query_body
from cqrs_shared import asyncapi
from cqrs_shared.contracts.commands import COMMANDS
from cqrs_shared.contracts.events import EVENT_TYPES
from cqrs_shared.contracts.queries import QUERIES
from cqrs_shared.topology import COMMANDS_EXCHANGE, EVENTS_EXCHANGE, QUERIES_EXCHANGE
from test_contract_models import _emitted_events

COMMAND_DATA = {
    "RegisterCustomer": {"customerId": "c1", "name": "Ada", "email": "ada@example.com", "creditLimit": "500"},
    "AddProduct": {"name": "Pen", "price": "2.50", "stock": 10},
    "RestockProduct": {"productId": "pen", "quantity": 5},
    "PlaceOrder": {"customerId": "c1", "items": [{"productId": "pen", "quantity": 2}],
                   "shippingAddress": {"street": "1 Main St", "city": "Town", "state": "TS", "zip": "1"}},
    "ShipOrder": {"orderId": "o1", "trackingNumber": "T1"},
    "DeliverOrder": {"orderId": "o1"},
    "CancelOrder": {"orderId": "o1", "reason": "changed my mind"},
    "RefundOrder": {"orderId": "o1", "reason": "broken"},
}
QUERY_PARAMETERS = {
    "GetOrderDetails": {"orderId": "o1", "includeHistory": True},
    "ListCustomerOrders": {"customerId": "c1", "status": "placed", "page": 2, "pageSize": 5},
    "SearchOrders": {"text": "ada", "dateFrom": "2026-01-01", "dateTo": "2026-01-31", "minAmount": "1.5"},
    "GetCustomerSummary": {"customerId": "c1"},
    "GetDailyOrderMetrics": {"dateFrom": "2026-01-01", "dateTo": "2026-01-31"},
    "GetPopularProducts": {"limit": 3},
    "GetProductAvailability": {"productId": "pen"},
}


def test_committed_document_is_what_the_code_generates():
    assert DOC_PATH.read_text() == asyncapi.render(), "docs/asyncapi.yaml is stale: run `make asyncapi` and commit it"
    r = subprocess.run([sys.executable, "-m", "cqrs_shared.asyncapi", "--check", str(DOC_PATH)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_check_fails_on_a_stale_document(tmp_path):
    stale = tmp_path / "asyncapi.yaml"
    stale.write_text(DOC_PATH.read_text().replace("PlaceOrder", "PlaceOrdr", 1))
    r = subprocess.run([sys.executable, "-m", "cqrs_shared.asyncapi", "--check", str(stale)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "out of date" in r.stderr


def _refs(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield path, v
            else:
                yield from _refs(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _refs(v, f"{path}/{i}")


def _get(doc, ref):
    assert ref.startswith("#/"), ref
    node = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


def test_document_structure_is_asyncapi_3():
    doc = document()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and re.fullmatch(r"\d+\.\d+\.\d+", doc["info"]["version"])
    assert doc["servers"]["rabbitmq"]["protocol"] == "amqp"
    key = re.compile(r"^[a-zA-Z0-9.\-_]+$")  # the spec's pattern for component and channel keys
    for section in ("channels", "operations"):
        assert all(key.match(k) for k in doc[section]), section
    for section, items in doc["components"].items():
        assert all(key.match(k) for k in items), section
    for path, ref in _refs(doc):  # every $ref resolves
        _get(doc, ref)
    for name, schema in doc["components"]["schemas"].items():
        Draft7Validator.check_schema(schema)
    for name, msg in doc["components"]["messages"].items():
        assert "payload" in msg, name
        Draft7Validator.check_schema(msg["payload"])
    for op_id, op in doc["operations"].items():
        assert op["action"] in ("send", "receive"), op_id
        channel_ref = op["channel"]["$ref"]
        # the spec: an operation's messages are messages of its channel
        for m in op["messages"]:
            assert m["$ref"].startswith(channel_ref + "/messages/"), (op_id, m)
        if "reply" in op:
            reply_channel = op["reply"]["channel"]["$ref"]
            assert all(m["$ref"].startswith(reply_channel + "/messages/") for m in op["reply"]["messages"])
            assert _get(doc, op["reply"]["address"]["$ref"])["location"].startswith("$message.header#/")


def _binding(doc, channel_id):
    return doc["channels"][channel_id]["bindings"]["amqp"]


def test_every_command_query_and_event_has_its_channel_operation_and_message():
    doc = document()
    for ctype in COMMANDS:
        ch = f"commands.{ctype}"
        assert doc["channels"][ch]["address"] == ctype
        assert _binding(doc, ch)["exchange"] == {"name": COMMANDS_EXCHANGE, "type": "direct", "durable": True,
                                                 "autoDelete": False, "vhost": "/"}
        op = doc["operations"][f"receive{ctype}"]
        assert op["reply"]["channel"]["$ref"] == "#/channels/commandReplies"
        assert "data" in document()["components"]["messages"][f"{ctype}Command"]["payload"]["allOf"][1]["properties"]
    for qtype in QUERIES:
        ch = f"queries.{qtype}"
        assert doc["channels"][ch]["address"] == qtype and _binding(doc, ch)["exchange"]["name"] == QUERIES_EXCHANGE
        op = doc["operations"][f"receive{qtype}"]
        assert op["reply"]["messages"] == [{"$ref": f"#/channels/queryReplies/messages/{qtype}Reply"}]
    for aggregate, etypes in EVENT_TYPES.items():
        for etype in etypes:
            ch = f"events.{aggregate}.{etype}"
            assert doc["channels"][ch]["address"] == f"{aggregate}.{etype}"
            assert _binding(doc, ch)["exchange"]["type"] == "topic"
            assert _binding(doc, ch)["exchange"]["name"] == EVENTS_EXCHANGE
            assert doc["operations"][f"send{etype}"]["action"] == "send"
    dlqs = {c["address"] for c in doc["channels"].values() if c.get("bindings", {}).get("amqp", {}).get("is") == "queue"}
    assert dlqs == {"command-service.commands.dlq", "query-service.queries.dlq", "projector-service.events.dlq"}


@pytest.mark.parametrize("ctype", list(COMMANDS))
def test_client_command_envelopes_conform(ctype):
    body = command_body(ctype, COMMAND_DATA[ctype], user_id="admin", roles=["admin"], expected_version=0,
                        correlation_id="corr-1")
    assert errors(f"{ctype}Command", body, {"x-deadline": "2026-11-23T10:30:00.000Z"}) == []


@pytest.mark.parametrize("qtype", list(QUERIES))
def test_client_query_envelopes_conform(qtype):
    body = query_body(qtype, QUERY_PARAMETERS[qtype], min_position=3, max_wait_ms=1000)
    assert errors(f"{qtype}Query", body) == []


@pytest.mark.parametrize("name,payload", [
    ("AddProductCommand", command_body("AddProduct", {"name": "Pen", "price": 2.5, "stock": 1}, user_id="a")),
    ("AddProductCommand", command_body("AddProduct", {"name": "Pen", "price": "2.505", "stock": 1}, user_id="a")),
    ("AddProductCommand", command_body("PlaceOrder", COMMAND_DATA["AddProduct"], user_id="a")),  # wrong type
    ("PlaceOrderCommand", command_body("PlaceOrder", {**COMMAND_DATA["PlaceOrder"], "items": []}, user_id="a")),
    ("RestockProductCommand", {"commandType": "RestockProduct", "data": {"productId": "p", "quantity": 1}}),
    ("SearchOrdersQuery", query_body("SearchOrders", {"status": "lost"})),
    ("SearchOrdersQuery", query_body("SearchOrders", {"colour": "red"})),
    ("GetOrderDetailsQuery", query_body("GetOrderDetails", {"orderId": "o1"}, max_wait_ms=60000)),
    ("CommandReply", {"commandId": "c", "status": "rejected", "error": {"code": "oops", "message": "m"}}),
    ("GetProductAvailabilityReply", {"queryId": "q", "status": "ok", "position": 1,
                                     "result": {"productId": "p", "name": "Pen", "price": "2.5", "stock": 1,
                                                "version": 1}}),
])
def test_schemas_refuse_what_the_contract_forbids(name, payload):
    assert errors(name, payload) != []


def test_replies_and_events_conform():
    assert errors("CommandReply", {"commandId": "c1", "status": "accepted", "aggregateId": "o1", "version": 1,
                                   "position": 42, "error": None}) == []
    assert errors("CommandReply", {"commandId": None, "status": "rejected", "aggregateId": None, "version": None,
                                   "position": None, "error": {"code": "validation_error", "message": "bad",
                                                               "details": [{"field": "body", "message": "x"}]}}) == []
    assert errors("GetOrderDetailsReply", {"queryId": "q1", "status": "error", "result": None, "position": 7,
                                           "error": {"code": "stale", "message": "m", "details": []}}) == []
    for e in _emitted_events():
        envelope = {"eventId": str(uuid.uuid4()), "eventType": e.event_type, "aggregateId": e.aggregate_id,
                    "aggregateType": e.aggregate_type, "version": e.version, "position": 1,
                    "timestamp": "2026-11-23T10:30:00.000Z", "correlationId": "c", "causationId": "c",
                    "schemaVersion": 1, "data": e.data, "metadata": {"userId": "admin"}}
        assert errors(f"{e.event_type}Event", envelope, {"x-aggregate-id": e.aggregate_id, "x-position": 1}) == []
        wrong = {**envelope, "aggregateType": "nope"}
        assert errors(f"{e.event_type}Event", wrong) != []
