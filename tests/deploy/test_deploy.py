"""The shipped dashboards and alerts only name metrics b24pipe really exposes, and every
alert points at a runbook entry in the README: a renamed metric must not leave an operator
with an empty panel or an alert that can never fire."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import redis
from prometheus_client import generate_latest

from ingress.metrics import MULTIPROC_ENV, IngressMetrics
from shared.keys import Keys
from workers.runner.metrics import WorkerMetrics, exposition

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
_METRIC = re.compile(r"\bb24pipe_[a-z0-9_]+")
_HELP = re.compile(r"^# HELP (\S+)", re.MULTILINE)
_SERIES_SUFFIXES = ("_bucket", "_sum", "_count")


def _exposed(r: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    # The worker imports these; their metrics are process-wide (prometheus_client's registry).
    for module in (
        "workers.guards.coalesce",
        "workers.dispatch",
        "workers.rest.client",
        "workers.portals.binding",
        "workers.portals.probe",
        "workers.portals.offline",
    ):
        importlib.import_module(module)
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    texts = [
        IngressMetrics().render()[0].decode(),
        generate_latest(exposition(WorkerMetrics(), r, keys, 60)).decode(),
    ]
    return {name for text in texts for name in _HELP.findall(text)}


def _base(name: str) -> str:
    for suffix in _SERIES_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def _deploy_files() -> list[Path]:
    files = sorted([*DEPLOY.glob("grafana/*.json"), *DEPLOY.glob("prometheus/*.yml")])
    assert files, "no dashboards or alert rules shipped"
    return files


def test_dashboards_and_alerts_name_only_exposed_metrics(
    r: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    exposed = _exposed(r, keys, monkeypatch)
    referenced = {(path.name, name) for path in _deploy_files() for name in _METRIC.findall(path.read_text())}
    assert referenced
    unknown = sorted(
        (file, name) for file, name in referenced if name not in exposed and _base(name) not in exposed
    )
    assert not unknown, f"metrics named in deploy/ but never exposed: {unknown}"


def test_every_alert_names_a_runbook_entry() -> None:
    readme = ROOT.joinpath("README.md").read_text()
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    entries = re.findall(r"runbook: ([^)]+)\)", alerts)
    assert len(entries) == alerts.count("- alert:")
    missing = [entry for entry in entries if f"### {entry}" not in readme]
    assert not missing, f"alerts point at README runbook entries that do not exist: {missing}"
