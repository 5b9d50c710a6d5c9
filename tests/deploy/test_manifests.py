"""Renders every kustomize overlay offline and checks what it produces: built-in objects
against the Kubernetes 1.30 schemas (strict), CRDs structurally, the hardening of every
workload, and the RabbitMQ definitions against cqrs_shared.topology."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cqrs_shared import topology as T

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ["base", "overlays/dev", "overlays/prod"]
K8S_VERSION = "1.30.0"
CRD_GROUPS = ("keda.sh/",)
SERVICES = ("command-service", "projector-service", "query-service")

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is needed to render kustomize")

_cache: dict[str, list[dict]] = {}


def render(overlay: str) -> list[dict]:
    if overlay not in _cache:
        out = subprocess.run(["kubectl", "kustomize", str(K8S / overlay)], check=True, capture_output=True, text=True).stdout
        _cache[overlay] = [d for d in yaml.safe_load_all(out) if d]
    return _cache[overlay]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    out = [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in docs if d["kind"] in ("Deployment", "Job", "StatefulSet")]
    assert out
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid(overlay: str) -> None:
    for doc in render(overlay):
        if doc["apiVersion"].startswith(CRD_GROUPS):
            assert set(doc) >= {"apiVersion", "kind", "metadata", "spec"}, doc
            assert doc["metadata"].get("name") and isinstance(doc["spec"], dict)
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_deployments_are_hardened(overlay: str) -> None:
    docs = render(overlay)
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    assert set(deployments) == set(SERVICES)
    for name, dep in deployments.items():
        spec = dep["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] == 30
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        (c,) = spec["containers"]
        assert c["args"] == ["serve"]
        for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            assert c[probe]["httpGet"]["path"] == path and c[probe]["httpGet"]["port"] == "health"
        assert c["ports"][0]["containerPort"] == 8080
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"]["type"] == "RuntimeDefault"
    for kind in ("PodDisruptionBudget",):
        assert {d["metadata"]["name"] for d in of_kind(docs, kind)} >= set(SERVICES)
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in of_kind(docs, "ScaledObject")}
    hpas = {d["spec"]["scaleTargetRef"]["name"] for d in of_kind(docs, "HorizontalPodAutoscaler")}
    assert set(scaled) == {"command-service", "projector-service"} and hpas == {"query-service"}
    assert not set(scaled) & hpas  # KEDA owns the HPA of what it scales
    queues = {n: d["spec"]["triggers"][0]["metadata"]["queueName"] for n, d in scaled.items()}
    assert queues == {"command-service": T.COMMAND_QUEUE.name, "projector-service": T.PROJECTOR_QUEUE.name}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_referenced_secret_and_configmap_exists(overlay: str) -> None:
    docs = render(overlay)
    secrets = {d["metadata"]["name"] for d in of_kind(docs, "Secret")}
    configmaps = {d["metadata"]["name"] for d in of_kind(docs, "ConfigMap")}
    for name, spec in pod_specs(docs):
        for c in spec["containers"]:
            for src in c.get("envFrom", []):
                if "secretRef" in src:
                    assert src["secretRef"]["name"] in secrets, name
                if "configMapRef" in src:
                    assert src["configMapRef"]["name"] in configmaps, name
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in secrets, name
        for vol in spec.get("volumes", []):
            if "configMap" in vol:
                assert vol["configMap"]["name"] in configmaps, name


def test_migration_job_runs_migrate() -> None:
    (job,) = of_kind(render("base"), "Job")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["image"].startswith("command-service") and c["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
def test_network_policies_allow_only_broker_own_database_and_dns(overlay: str) -> None:
    docs = render(overlay)
    pols = {d["metadata"]["name"]: d["spec"] for d in of_kind(docs, "NetworkPolicy")}
    assert pols["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    db_port = {"command-service": 5432, "projector-service": 27017, "query-service": 27017}
    for svc in SERVICES:
        spec = pols[svc]
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == svc
        ports = sorted(p["port"] for rule in spec["egress"] for p in rule["ports"])
        amqp = 5672 if overlay.endswith("dev") else 5671
        assert ports == sorted([53, 53, amqp, db_port[svc]]), (svc, ports)
        for rule in spec["egress"]:
            assert rule.get("to"), "an egress rule without `to` would allow every destination"


def test_dev_overlay_runs_the_servers_as_statefulsets() -> None:
    docs = render("overlays/dev")
    sts = {d["metadata"]["name"]: d for d in of_kind(docs, "StatefulSet")}
    assert set(sts) == {"rabbitmq", "postgres", "mongo"}
    for s in sts.values():
        assert s["spec"]["volumeClaimTemplates"]
    assert not of_kind(render("overlays/prod"), "StatefulSet")


def _definitions(overlay: str) -> dict:
    (cm,) = [d for d in of_kind(render(overlay), "ConfigMap") if d["metadata"]["name"] == "rabbitmq-definitions"]
    return json.loads(cm["data"]["definitions.json"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rabbitmq_definitions_match_the_topology(overlay: str) -> None:
    defs = _definitions(overlay)
    queues = {q["name"]: q for q in defs["queues"]}
    expected: dict[str, dict] = {}
    for spec in T.ALL_CONSUMED_QUEUES:
        expected.update(spec.queues())  # the arguments the services declare
    assert {n: q["arguments"] for n, q in queues.items()} == expected
    for spec in T.ALL_CONSUMED_QUEUES:  # what the arguments mean
        assert queues[spec.dlq]["arguments"]["x-queue-type"] == "quorum"
        for delay in spec.retry_delays_ms:
            args = queues[spec.retry_queue(delay)]["arguments"]
            assert (args["x-message-ttl"], args["x-dead-letter-routing-key"]) == (delay, spec.name)
    assert queues[T.COMMAND_QUEUE.name]["arguments"]["x-queue-type"] == "quorum"
    assert queues[T.PROJECTOR_QUEUE.name]["arguments"]["x-dead-letter-routing-key"] == T.PROJECTOR_QUEUE.dlq
    assert all(q["durable"] and not q["auto_delete"] for q in queues.values())

    exchanges = {e["name"]: e for e in defs["exchanges"]}
    for name in (T.COMMANDS_EXCHANGE, T.QUERIES_EXCHANGE):
        assert exchanges[name]["type"] == "direct"
        assert exchanges[name]["arguments"] == {"alternate-exchange": f"{name}.unrouted"}
        assert exchanges[f"{name}.unrouted"]["type"] == "fanout"
    assert exchanges[T.EVENTS_EXCHANGE]["type"] == "topic"
    assert exchanges[T.INTERNAL_EXCHANGE]["type"] == "direct"

    bindings = {(b["source"], b["destination"], b["routing_key"]) for b in defs["bindings"]}
    want = set()
    for spec in T.ALL_CONSUMED_QUEUES:
        want |= {(spec.exchange, spec.name, k) for k in spec.routing_keys}
        if spec.alternate_exchange:
            want.add((spec.alternate_exchange, spec.name, ""))
    assert bindings == want


def test_each_service_user_reads_only_its_own_queues() -> None:
    defs = _definitions("base")
    perms = {p["user"]: p for p in defs["permissions"]}
    assert set(perms) == set(SERVICES) | {"cqrsctl"}
    queue_names = [q["name"] for q in defs["queues"]]
    exchange_names = [e["name"] for e in defs["exchanges"]]
    for user in SERVICES:
        p = perms[user]
        readable = {q for q in queue_names if re.search(p["read"], q)}
        assert readable and all(q.startswith(f"{user}.") for q in readable), (user, readable)
        # the RabbitMQ configure regex covers every declared name: services declare it all at start
        for name in queue_names + exchange_names:
            assert re.search(p["configure"], name), (user, name)
    # the operator's cqrsctl: sends commands, queries and rebuild requests; declares, reads nothing
    ctl = perms["cqrsctl"]
    assert not any(re.search(ctl[k], n) for k in ("configure", "read") for n in queue_names + exchange_names)
    assert not any(re.search(ctl["write"], q) for q in queue_names)
    publishes = {u: {e for e in ("cqrs.commands", "cqrs.queries", "cqrs.events", "cqrs.internal") if re.search(p["write"], e)}
                 for u, p in perms.items()}
    assert publishes == {"command-service": {"cqrs.events"}, "projector-service": {"cqrs.internal"}, "query-service": set(),
                         "cqrsctl": {"cqrs.commands", "cqrs.queries", "cqrs.internal"}}
    assert {p["user"] for p in _definitions("overlays/dev")["permissions"]} == set(SERVICES) | {"admin", "cqrsctl"}


def test_rebuild_job_is_valid_and_runs_rebuild() -> None:
    """deploy/k8s/jobs/projector-rebuild.yaml is created by hand (not in the kustomization)."""
    (job,) = [d for d in yaml.safe_load_all((K8S / "jobs" / "projector-rebuild.yaml").read_text()) if d]
    job = {**job, "metadata": {**job["metadata"], "name": "projector-rebuild-x"}}  # what generateName gives
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    spec = job["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["image"].startswith("projector-service") and c["args"] == ["rebuild", "all"]
    assert spec["restartPolicy"] == "Never" and spec["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # the projector's NetworkPolicy selects it; its secrets exist in every overlay
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "projector-service"
    for overlay in OVERLAYS:
        assert "projector-service-secrets" in {d["metadata"]["name"] for d in of_kind(render(overlay), "Secret")}
