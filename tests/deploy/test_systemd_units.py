"""The shipped systemd units are sandboxed (`systemd-analyze security` exposure below 3) and
the worker unit's instance name is its metrics port, valid for any instance.

systemd-analyze comes from Debian's `systemd` package (APT_TOOLS in the Makefile)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
MAX_EXPOSURE = 3.0


@pytest.mark.parametrize("unit", ["b24pipe-ingress.service", "b24pipe-worker@.service"])
def test_units_are_sandboxed(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found: install Debian's 'systemd' package (make tools)"
    # an instance of the template, as systemd would load it
    path = tmp_path / unit.replace("@.", "@9100.")
    path.write_text((UNITS / unit).read_text())
    done = subprocess.run(
        [analyze, "security", "--offline=true", str(path)], capture_output=True, text=True, timeout=60
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) < MAX_EXPOSURE, done.stdout


def test_the_worker_instance_name_is_its_metrics_port() -> None:
    text = (UNITS / "b24pipe-worker@.service").read_text()
    (command,) = re.findall(r"^ExecStart=(.*)$", text, re.MULTILINE)
    assert "--metrics-port %i" in command and "--metrics-host 127.0.0.1" in command


@pytest.mark.parametrize("unit", ["b24pipe-ingress.service", "b24pipe-worker@.service"])
def test_a_configuration_error_is_not_restarted_in_a_loop(unit: str) -> None:
    """Bad settings exit 2 with one line; systemd must not restart that forever."""
    text = (UNITS / unit).read_text()
    assert re.search(r"^RestartPreventExitStatus=.*\b2\b", text, re.MULTILINE)
