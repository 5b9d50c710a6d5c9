"""Checks payloads against the message schemas of docs/asyncapi.yaml (used by the unit and e2e
tests: the document must describe what really goes over the wire)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.yaml"


@cache
def document() -> dict[str, Any]:
    return yaml.safe_load(DOC_PATH.read_text())


def _validator(schema: dict[str, Any]) -> Draft7Validator:
    # AsyncAPI schemas are a superset of JSON Schema draft 07; "#/components/..." refs resolve
    # against the document, so the document is the root the schema is evaluated in
    doc = document()
    return Draft7Validator({**schema, "components": doc["components"]})


def message(name: str) -> dict[str, Any]:
    return document()["components"]["messages"][name]


def _resolve(obj: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in obj and len(obj) == 1:
        node: Any = document()
        for part in obj["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def errors(name: str, payload: Any, headers: dict[str, Any] | None = None) -> list[str]:
    """Every way `payload` (and `headers`) break the message `name`; empty when it conforms."""
    msg = message(name)
    found = [f"payload {'/'.join(map(str, e.absolute_path))}: {e.message}"
             for e in _validator(msg["payload"]).iter_errors(payload)]
    if headers is not None and "headers" in msg:
        found += [f"headers {'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in _validator(_resolve(msg["headers"])).iter_errors(headers)]
    return found
