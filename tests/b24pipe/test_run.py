"""`b24pipe run` as a newcomer runs it: no Redis, no key, one command. It starts an embedded
Redis with AOF, generates a key, serves events into real RQ jobs that its worker runs, and a
Ctrl-C (SIGINT to the whole foreground process group, as a terminal sends it) stops
everything in order: nothing complains that Redis went away first."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import redis
from rq.registry import FinishedJobRegistry

from b24pipe.redisserver import free_port
from b24pipe.testing.ingress import FORM, INVALID_TOKEN, OK, body, wait_http
from b24pipe.testing.workers import ROOT, wait_for
from shared.keys import Keys

TOKEN = "apptoken0123456789abcdef01234567"


def _clean_env() -> dict[str, str]:
    """The environment of a fresh machine: nothing of b24pipe or Redis configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "B24PIPE_", "B24_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _post(port: int, payload: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/b24/events", data=payload.encode(), headers=FORM, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_run_from_nothing_serves_events_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    # a real app's credentials: the pipeline alone, no demo (tests/b24pipe/test_demo.py has that)
    env = {**_clean_env(), "B24_CLIENT_ID": "local.app.1", "B24_CLIENT_SECRET": "an-app-secret-value"}
    process = subprocess.Popen(
        [sys.executable, "-m", "b24pipe", "run", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, to send Ctrl-C to the whole group
    )
    try:
        wait_http(port, process, timeout=60)
        var = tmp_path / "var"
        url = (var / "redis.url").read_text().strip()
        key = (var / "token.key").read_text().strip()
        assert stat.S_IMODE((var / "token.key").stat().st_mode) == 0o600
        client = redis.Redis.from_url(url)
        config = client.config_get("appendonly") | client.config_get("maxmemory-policy")
        assert config == {"appendonly": "yes", "maxmemory-policy": "noeviction"}

        assert _post(port, body("m1", TOKEN)) == (401, INVALID_TOKEN)
        secrets = json.dumps({"application_token": TOKEN})
        portals_add = [
            "portals",
            "add",
            "--member-id",
            "m1",
            "--domain",
            "m1.example.com",
            "--secrets-file",
            "-",
        ]
        added = subprocess.run(
            [sys.executable, "-m", "b24pipe", *portals_add],
            input=secrets,
            env={**env, "REDIS_URL": url, "B24PIPE_TOKEN_KEYS": key},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stderr
        # every ingress process polls the portals version: the new portal is seen within a second
        assert wait_for(lambda: _post(port, body("m1", TOKEN, entity=1)) == (200, OK), timeout=10)
        finished = FinishedJobRegistry(Keys("b24pipe").events_queue, connection=client)
        assert wait_for(lambda: finished.count >= 1, timeout=30)  # the worker ran the job
        client.close()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    text = output.decode()
    assert process.returncode == 0, text
    assert "pipeline stopped" in text
    assert "demo:" not in text and not (tmp_path / "var" / "simulator.log").exists()
    assert "Connection refused" not in text and "Traceback" not in text
    assert not (tmp_path / "var" / "redis.url").exists()
    assert list((tmp_path / "var" / "redis").glob("appendonly*"))  # the AOF is on disk


def test_a_component_that_exits_is_started_again_and_the_rest_stays_up(tmp_path: Path) -> None:
    """The supervision of `b24pipe run`: a child that exits (here `b24pipe --help`, at once)
    is started again with growing pauses, while a child that keeps running is left alone."""
    import threading

    from b24pipe.commands.run import _keep_up, _spawn

    env = {**_clean_env(), "REDIS_URL": "redis://127.0.0.1:1/0"}
    commands = [["--help"], ["status"]]  # `status` waits for the unreachable Redis: it stays up
    children = [_spawn(command, env) for command in commands]
    waiting = children[1]
    first = children[0]
    stop = threading.Event()
    supervisor = threading.Thread(target=_keep_up, args=(children, commands, env, stop.is_set))
    supervisor.start()
    try:
        assert wait_for(lambda: children[0] is not first and children[0].poll() is not None, timeout=30)
        assert children[1] is waiting and waiting.poll() is None
    finally:
        stop.set()
        supervisor.join(10)
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
