"""cqrsctl without a broker: one-line errors and exit 2 when RabbitMQ cannot be reached, local
validation before connecting (exit 1, nothing sent), parameters from JSON files or stdin, and
the AsyncAPI command."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cqrs_client.cli import app
from cqrs_shared.asyncapi import render

NOWHERE = "amqp://guest:secret@127.0.0.1:1/"  # nothing listens on port 1
runner = CliRunner()


def cqrsctl(*args: str, stdin: str | None = None):
    return runner.invoke(app, [*args], input=stdin, env={"AMQP_URL": NOWHERE, "COLUMNS": "200"})


@pytest.mark.parametrize("args", [
    ["command", "DeliverOrder", "-d", '{"orderId": "o1"}', "-u", "admin", "-r", "admin"],
    ["query", "GetOrderDetails", "-p", "orderId=o1"],
    ["query", "GetOrderDetails", "-p", "orderId=o1", "--json"],
    ["events", "tail"],
    ["dlq", "list"],
    ["dlq", "show", "command-service.commands"],
    ["dlq", "replay", "command-service.commands"],
    ["dlq", "purge", "command-service.commands", "--yes"],
    ["rebuild"],
    ["rebuild", "all", "--json"],
])
def test_unreachable_broker_is_one_line_and_exit_2(args):
    r = cqrsctl(*args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/" in lines[0], r.stderr
    assert "secret" not in r.stderr and "Traceback" not in r.output + r.stderr and r.stdout == ""


def test_invalid_query_parameters_are_refused_before_connecting():
    r = cqrsctl("query", "SearchOrders", "-p", "status=lost", "-p", "pageSize=500")
    assert r.exit_code == 1, r.output  # 1, not 2: the broker was never tried
    assert "validation_error" in r.stderr and "parameters.status" in r.stderr and "parameters.pageSize" in r.stderr
    r = cqrsctl("query", "SearchOrders", "-p", "status=lost", "--json")
    reply = json.loads(r.stdout)
    assert r.exit_code == 1 and reply["status"] == "error" and reply["error"]["code"] == "validation_error"
    r = cqrsctl("query", "NoSuchQuery")
    assert r.exit_code == 1 and "queryType" in r.stderr


def test_parameters_from_a_json_file_or_stdin_with_flags_on_top(tmp_path):
    f = tmp_path / "q.json"
    f.write_text(json.dumps({"customerId": "c1", "page": 2, "pageSize": 0}))
    r = cqrsctl("query", "ListCustomerOrders", "--params", f"@{f}")
    assert r.exit_code == 1 and "parameters.pageSize" in r.stderr and "parameters.page:" not in r.stderr
    r = cqrsctl("query", "ListCustomerOrders", "--params", f"@{f}", "-p", "pageSize=10")  # valid: goes to the broker
    assert r.exit_code == 2 and "cannot reach RabbitMQ" in r.stderr
    r = cqrsctl("query", "ListCustomerOrders", "--params", "-", stdin='{"customerId": "c1", "status": "lost"}')
    assert r.exit_code == 1 and "parameters.status" in r.stderr
    r = cqrsctl("query", "ListCustomerOrders", "--params", "[1]")
    assert r.exit_code != 0 and "must be a JSON object" in r.output + r.stderr


def test_command_data_from_stdin_is_validated_before_connecting():
    r = cqrsctl("command", "AddProduct", "-d", "-", "-u", "admin", "-r", "admin",
                stdin='{"name": "Pen", "price": 2.5, "stock": 1}')
    assert r.exit_code == 1 and "data.price" in r.stderr
    r = cqrsctl("command", "AddProduct", "-d", "-", "-u", "admin", "-r", "admin",
                stdin='{"name": "Pen", "price": "2.50", "stock": 1}')
    assert r.exit_code == 2 and "cannot reach RabbitMQ" in r.stderr


def test_asyncapi_command_prints_and_checks_the_document(tmp_path):
    r = cqrsctl("asyncapi")
    assert r.exit_code == 0 and r.stdout == render()
    out = tmp_path / "asyncapi.yaml"
    assert cqrsctl("asyncapi", "-o", str(out)).exit_code == 0 and out.read_text() == render()
    assert cqrsctl("asyncapi", "-o", str(out), "--check").exit_code == 0
    out.write_text(render() + "# edited\n")
    r = cqrsctl("asyncapi", "-o", str(out), "--check")
    assert r.exit_code == 1 and "out of date" in r.stderr


def test_param_values_follow_the_parameter_types():
    from cqrs_client.cli import _parse_value, _string_params

    strings = _string_params("SearchOrders")
    assert {"text", "status", "dateFrom", "minAmount"} <= strings and "page" not in strings
    assert _parse_value("123", keep_string="text" in strings) == "123"  # text=123 stays text
    assert _parse_value("2", keep_string="page" in strings) == 2
    assert _parse_value("true", keep_string="includeHistory" in _string_params("GetOrderDetails")) is True
    r = cqrsctl("query", "GetOrderDetails", "-p", "orderId=123", "-p", "includeHistory=true")
    assert r.exit_code == 2  # valid locally (orderId "123", includeHistory true): it went for the broker


def test_command_fields_from_flags_on_top_of_data():
    from cqrs_client.cli import _string_fields

    assert {"orderId", "trackingNumber"} <= _string_fields("ShipOrder", "command")
    assert "quantity" not in _string_fields("RestockProduct", "command")
    r = cqrsctl("command", "RestockProduct", "-f", "productId=42", "-f", "quantity=0", "-u", "admin", "-r", "admin")
    assert r.exit_code == 1 and "data.quantity" in r.stderr and "data.productId" not in r.stderr  # "42" is an id
    r = cqrsctl("command", "ShipOrder", "-d", '{"orderId": "o1"}', "-f", "trackingNumber=T-1", "-u", "admin", "-r",
                "admin")
    assert r.exit_code == 2 and "cannot reach RabbitMQ" in r.stderr  # valid: it went for the broker
    r = cqrsctl("command", "ShipOrder", "-u", "admin")
    assert r.exit_code != 0 and "--data" in r.output + r.stderr
