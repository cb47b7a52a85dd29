"""`b24pipe sim` (and `python -m b24pipe.sim`, the same command): its options do what the
README says, it prints the settings a pipeline needs, bad values are one line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from b24pipe.redisserver import free_port
from b24pipe.sim.client import SimClient
from b24pipe.simportal import launch_simulator, stop_simulator, wait_until_up
from b24pipe.testing.workers import ROOT
from tests.support.runkit import fresh_env


@pytest.mark.parametrize(
    "args", [["--port", "0"], ["--port", "70000"], ["--token-ttl", "0"], ["--port", "eighty"]]
)
def test_bad_options_are_one_line_and_exit_2(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "b24pipe", "sim", *args],
        env=fresh_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("b24pipe: ")


@pytest.fixture
def custom(tmp_path: Path) -> Iterator[tuple[SimClient, Path]]:
    port = free_port()
    out = tmp_path / "sim.out"
    with out.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "b24pipe",
                "sim",
                "--port",
                str(port),
                "--public-url",
                f"http://localhost:{port}/",
                "--client-id",
                "my.app",
                "--client-secret",
                "my-app-secret-value",
                "--token-ttl",
                "120",
            ],
            cwd=ROOT,
            env=fresh_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    client = SimClient(f"http://127.0.0.1:{port}", "my.app", "my-app-secret-value")
    try:
        wait_until_up(client.base_url, process)
        yield client, out
    finally:
        stop_simulator(process)


def test_options_and_the_printed_settings(custom: tuple[SimClient, Path]) -> None:
    sim, out = custom
    base = sim.base_url.replace("127.0.0.1", "localhost")
    printed = out.read_text()
    assert f"Bitrix24 simulator on {base}" in printed
    assert (
        f"pipeline settings: B24_OAUTH_URL={base} B24_CLIENT_ID=my.app B24_CLIENT_SECRET=<--client-secret> "
        "B24PIPE_ALLOW_HTTP=1 B24PIPE_ALLOWED_HOSTS=127.0.0.1"
    ) in printed
    assert "my-app-secret-value" not in printed
    portal = sim.create_portal()
    assert portal.client_endpoint == f"{base}/p/{portal.domain}/rest/"
    installed = sim.install(portal.member_id)
    assert installed.expires - sim.advance_clock(portal.member_id, 0)["time"] <= 120
    assert sim.refresh(installed.refresh_token).status == 200  # the configured client id and secret
    wrong = SimClient(sim.base_url, "my.app", "another-secret").refresh(installed.refresh_token)
    assert wrong.body.get("error") == "invalid_client", wrong


def test_python_dash_m_is_the_same_command(tmp_path: Path) -> None:
    with (tmp_path / "out").open("wb") as output:
        process, sim = launch_simulator(free_port(), "app.x", "app-x-secret-value", output)
    try:
        assert sim.create_portal().client_endpoint.startswith(sim.base_url)
    finally:
        stop_simulator(process)
    assert "pipeline settings: " in (tmp_path / "out").read_text()
