"""rq-dashboard, the RQ web UI operators use, shows b24pipe's failed jobs with their scrubbed
exception and its workers as they are: read through its JSON API and rendered in headless
Chromium (the job page's DOM and a screenshot).

rq-dashboard comes from the dev extra, Chromium from Debian's `chromium` package (APT_TOOLS);
a missing one fails the test, naming it."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.job import Job, JobStatus

from b24pipe.redisserver import free_port
from b24pipe.testing.workers import enqueue, start_worker, stop, wait_for, worker_env
from shared.keys import Keys

SECRET = "abcdefabcdefabcdefabcdefabcdef0123456789"  # what ONTESTPERM's exception text carries
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def _up(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
        return True
    return False


@pytest.fixture
def dashboard(redis_url: str) -> Iterator[str]:
    binary = shutil.which("rq-dashboard", path=str(Path(sys.executable).parent))
    assert binary, "rq-dashboard not found: `make install` installs it (dev extra)"
    port = free_port()
    process = subprocess.Popen(
        [binary, "-u", redis_url, "-b", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _up(f"{base}/0/data/queues.json")), "rq-dashboard did not start"
        yield base
    finally:
        stop(process)


def test_rq_dashboard_shows_the_failure_and_the_worker(
    r: redis.Redis, keys: Keys, base_env: dict[str, str], dashboard: str, tmp_path: Path
) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium not found: install Debian's 'chromium' package (make tools)"
    worker = start_worker(worker_env(base_env))
    try:
        job_id = enqueue(r, keys, "ONTESTPERM")
        assert wait_for(lambda: Job.fetch(job_id, connection=r).get_status() == JobStatus.FAILED)
        job = _get(f"{dashboard}/0/data/job/{job_id}.json")
        assert job["status"] == "failed"
        assert "refused with" in job["exc_info"] and SECRET not in job["exc_info"]

        def shown() -> dict[str, Any]:  # this test's worker (other tests' may share the Redis)
            workers = _get(f"{dashboard}/0/data/workers.json")["workers"]
            (mine,) = [w for w in workers if keys.events_queue in w["queues"]]
            return dict(mine)

        assert wait_for(lambda: shown()["state"] == "idle")
        assert shown()["failed_job_count"] == 1

        page = f"{dashboard}/0/view/job/{job_id}"
        common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
        dom = subprocess.run([*common, "--dump-dom", page], capture_output=True, text=True, timeout=120)
        assert "refused with" in dom.stdout and SECRET not in dom.stdout, dom.stderr[-2000:]
        shot = tmp_path / "job.png"
        subprocess.run(
            [*common, f"--screenshot={shot}", "--window-size=1280,900", page],
            capture_output=True,
            timeout=120,
        )
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    finally:
        assert stop(worker) == 0
