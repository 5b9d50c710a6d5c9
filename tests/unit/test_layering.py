"""Dependency direction: only adapters (and the shared messaging adapter) import the
drivers; domain and application import neither drivers nor adapters."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = {"aio_pika", "aiormq", "asyncpg", "motor", "pymongo", "faststream"}
SERVICES = ["command_service", "projector_service", "query_service"]


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def service_files(pkg: str):
    src = ROOT / "services" / pkg.replace("_", "-") / "src" / pkg
    return [p for p in src.rglob("*.py")]


@pytest.mark.parametrize("pkg", SERVICES)
def test_only_adapters_import_drivers(pkg):
    offenders = []
    for path in service_files(pkg):
        rel = path.relative_to(ROOT)
        if "adapters" in path.parts:
            continue
        bad = {m for m in imports(path) if m.split(".")[0] in DRIVERS}
        if bad:
            offenders.append(f"{rel}: {sorted(bad)}")
    assert not offenders, "drivers imported outside adapters:\n" + "\n".join(offenders)


@pytest.mark.parametrize("pkg", SERVICES)
def test_domain_and_application_do_not_import_adapters(pkg):
    offenders = []
    for path in service_files(pkg):
        if not ({"domain", "application"} & set(path.parts)):
            continue
        bad = {m for m in imports(path) if ".adapters" in m or m.endswith("wiring")}
        if bad:
            offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert not offenders, "\n".join(offenders)
