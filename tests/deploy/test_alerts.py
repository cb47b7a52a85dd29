"""The shipped Prometheus configuration is valid and every alert is unit-tested with promtool:
one test that fires it and one that keeps it quiet (deploy/prometheus/tests/, one file per
alert: adding an alert means adding its file). The dashboard's queries parse as PromQL.

promtool comes from Debian's `prometheus` package (APT_TOOLS in the Makefile); without it
these tests fail, naming the package."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERT_TESTS = PROMETHEUS / "tests"
DASHBOARD = ROOT / "deploy" / "grafana" / "b24pipe.json"
# Grafana's own variables, replaced by a duration so the query parses as plain PromQL
_GRAFANA_DURATIONS = re.compile(r"\$\{?__(rate_interval|interval|range)\}?")


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: install Debian's 'prometheus' package (make tools)"
    done = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def _alerts() -> list[str]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def _alert_cases() -> dict[str, dict[str, int]]:
    """alert name -> {'fires': n, 'quiet': n} over every promtool test file."""
    cases: dict[str, dict[str, int]] = {}
    for path in sorted(ALERT_TESTS.glob("*.yml")):
        document: dict[str, Any] = yaml.safe_load(path.read_text())
        for test in document.get("tests", []):
            for case in test.get("alert_rule_test", []):
                kind = "fires" if case.get("exp_alerts") else "quiet"
                counts = cases.setdefault(case["alertname"], {"fires": 0, "quiet": 0})
                counts[kind] += 1
    return cases


def test_prometheus_config_and_rules_are_valid() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")


def test_every_alert_has_a_firing_and_a_quiet_promtool_test() -> None:
    alerts = _alerts()
    assert len(alerts) >= 9
    cases = _alert_cases()
    missing = [name for name in alerts if cases.get(name, {}).get("fires", 0) < 1]
    assert not missing, f"alerts without a promtool test that fires them: {missing}"
    missing = [name for name in alerts if cases.get(name, {}).get("quiet", 0) < 1]
    assert not missing, f"alerts without a promtool test that keeps them quiet: {missing}"
    unknown = sorted(set(cases) - set(alerts))
    assert not unknown, f"promtool tests name alerts that alerts.yml does not have: {unknown}"


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    files = sorted(path.name for path in ALERT_TESTS.glob("*.yml"))
    assert files
    output = promtool("test", "rules", *files, cwd=ALERT_TESTS)
    assert output.count("SUCCESS") == len(files), output


def _dashboard_queries() -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text()))
    return found


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule's expression (a PromQL syntax error
    names the rule, hence the panel's query)."""
    queries = _dashboard_queries()
    assert len(queries) >= 20
    rules = [
        {"record": f"dashboard:query_{index}", "expr": _GRAFANA_DURATIONS.sub("5m", query)}
        for index, query in enumerate(queries)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(queries)} rules found" in promtool("check", "rules", str(path))
