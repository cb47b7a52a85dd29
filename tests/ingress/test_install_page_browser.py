"""The install page in a real browser: headless Chromium loads the simulator's portal page,
which POSTs the install form into a frame on a real `b24pipe ingress`, exactly as Bitrix24
does. The page loads the BX24 library from //api.bitrix24.com/api/v1/ (the browser's
resolver points that host at the simulator, which serves a stub); the stub reports
`BX24.installFinish()` to the portal page, and the page to the simulator.

A stored install calls `installFinish()` exactly once, and the install page's tokens are
enough for the worker to bind the portal's events; a refused install never calls it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from b24pipe.redisserver import free_port
from b24pipe.sim.client import SimClient
from b24pipe.testing.ingress import ingress_process
from b24pipe.testing.workers import stop, wait_for
from shared.keys import Keys
from tests.support.clientkit import client_env, start_logged_worker

BROWSER = "chromium"


def _browser() -> str:
    found = shutil.which(BROWSER)
    if found is None:
        pytest.fail(
            f"{BROWSER} is not installed: `make test` installs it (APT_TOOLS in the Makefile), "
            "or run `apt-get install chromium`"
        )
    return found


def _open(frame_url: str, simulator: SimClient, profile: Path) -> str:
    """Load the portal page headless until its frame settled; the page's DOM afterwards."""
    sim = urlsplit(simulator.base_url)
    done = subprocess.run(
        [
            _browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--host-resolver-rules=MAP api.bitrix24.com {sim.hostname}:{sim.port}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            frame_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _bound(simulator: SimClient, member_id: str, url: str) -> set[str]:
    return {b["event"] for b in simulator.stats(member_id)["bindings"] if b["handler"] == url}


def _finish_calls(simulator: SimClient, member_id: str) -> int:
    return int(simulator.stats(member_id)["install_finish_calls"])


def test_install_page_calls_install_finish_once_when_stored_and_never_when_refused(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    _browser()
    port = free_port()
    env = client_env(
        base_env,
        simulator,
        B24PIPE_PUBLIC_URL=f"http://127.0.0.1:{port}",
        B24PIPE_BIND_CHECK_INTERVAL="0",
        B24PIPE_PROBE_INTERVAL="0",
    )
    with ingress_process(env, port):
        workers.append(start_logged_worker(env, tmp_path / "worker.log"))
        portal = simulator.create_portal()
        member = portal.member_id
        installed = simulator.install(member, install_url=f"http://127.0.0.1:{port}/b24/install", frame=True)
        assert installed.frame_url and _finish_calls(simulator, member) == 0
        assert simulator.stats(member)["install_finished"] is False
        dom = _open(installed.frame_url, simulator, tmp_path / "profile-1")
        assert 'id="app"' in dom
        assert wait_for(lambda: _finish_calls(simulator, member) >= 1, timeout=30), dom
        assert r.exists(keys.portal(member))  # the install was stored, then finished
        assert simulator.stats(member)["install_finished"] is True
        # the install page was the only token arrival: the worker bound the portal's events from it
        url = f"http://127.0.0.1:{port}/b24/events"
        wanted = {"ONAPPTEST", "ONAPPUNINSTALL", "ONAPPUPDATE"}
        assert wait_for(lambda: wanted <= _bound(simulator, member, url), timeout=60)
        stop(workers.pop())

    # an ingress whose client id is not the app's: the authorization server does not vouch
    port = free_port()
    with ingress_process({**env, "B24_CLIENT_ID": "app.someone.else"}, port):
        refused = simulator.create_portal()
        attempt = simulator.install(
            refused.member_id, install_url=f"http://127.0.0.1:{port}/b24/install", frame=True
        )
        dom = _open(attempt.frame_url, simulator, tmp_path / "profile-2")
        assert 'data-loaded="1"' in dom  # the refused page was shown in the frame
    assert not r.exists(keys.portal(refused.member_id))
    assert _finish_calls(simulator, refused.member_id) == 0
    assert _finish_calls(simulator, member) == 1  # and the stored one exactly once
