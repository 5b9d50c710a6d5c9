"""cqrsctl against a real RabbitMQ that refuses it: each cause gets one line saying what to
check, and exit 2."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from cqrs_client.cli import app


@pytest.mark.parametrize("url_of,expected", [
    (lambda u: f"amqp://{u.username}:not-the-password@{u.hostname}:{u.port or 5672}{u.path}", "login refused"),
    (lambda u: f"amqp://{u.username}:{u.password}@{u.hostname}:{u.port or 5672}/no-such-vhost-here",
     "does the vhost in the URL exist"),
])
def test_refused_connections_say_what_to_check(rabbit_vhost_url, url_of, expected):
    url = url_of(urlsplit(rabbit_vhost_url))
    r = CliRunner().invoke(app, ["query", "GetOrderDetails", "-p", "orderId=o1"], env={"AMQP_URL": url})
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "set --amqp-url or AMQP_URL" in lines[0], r.stderr
    assert "not-the-password" not in r.stderr and "Traceback" not in r.stderr
