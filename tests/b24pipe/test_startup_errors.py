"""Start-up problems end in one line on stderr and exit 2, never a traceback or failing jobs
later: a port already in use, a bad B24PIPE_RATE_PLAN, a second `b24pipe run` in the same
directory. And the console script finds handler modules in the current directory exactly
as `python -m b24pipe` does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from b24pipe.redisserver import free_port
from b24pipe.testing.ingress import wait_http
from b24pipe.testing.workers import ROOT

CONSOLE_SCRIPT = Path(sys.executable).parent / "b24pipe"


def _env(base_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "B24PIPE_", "B24_"))}
    env.pop("PYTHONPATH", None)
    return env | base_env | extra


def _one_line_exit_2(done: subprocess.CompletedProcess[str], naming: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and naming in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_the_console_script_imports_handlers_from_the_current_directory(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    assert CONSOLE_SCRIPT.exists(), f"no console script at {CONSOLE_SCRIPT}: run `make install`"
    (tmp_path / "my_app_handlers.py").write_text(
        "from workers import handler\n\n\n@handler('ONCRMDEALADD')\ndef added(event, b24):\n    pass\n"
    )
    env = _env(base_env, B24PIPE_HANDLERS="my_app_handlers")
    for command in ([str(CONSOLE_SCRIPT)], [sys.executable, "-m", "b24pipe"]):
        done = subprocess.run(
            [*command, "worker", "--burst"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (command, done.stderr)


def test_a_port_in_use_is_refused_at_start(base_env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for command in (["ingress", "--host", "127.0.0.1"], ["run", "--var", str(tmp_path / "var")]):
            done = subprocess.run(
                [sys.executable, "-m", "b24pipe", *command, "--port", str(port)],
                cwd=ROOT,
                env=_env(base_env),
                capture_output=True,
                text=True,
                timeout=60,
            )
            _one_line_exit_2(done, f"127.0.0.1:{port}")


def test_a_bad_rate_plan_is_refused_at_start(base_env: dict[str, str], tmp_path: Path) -> None:
    for command in (["worker", "--burst"], ["ingress", "--port", str(free_port())], ["status"]):
        done = subprocess.run(
            [sys.executable, "-m", "b24pipe", *command],
            cwd=ROOT,
            env=_env(base_env, B24PIPE_RATE_PLAN="platinum"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        _one_line_exit_2(done, "B24PIPE_RATE_PLAN")


def test_a_second_run_in_the_same_directory_refuses(base_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env = _env(base_env) | {"PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        [sys.executable, "-m", "b24pipe", "run", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http(port, first, timeout=60)
        second = subprocess.run(
            [sys.executable, "-m", "b24pipe", "run", "--port", str(free_port())],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        _one_line_exit_2(second, "another `b24pipe run`")
        assert first.poll() is None
    finally:
        os.killpg(first.pid, signal.SIGINT)
        first.wait(timeout=60)
    # once the first has stopped, the directory is free again
    third = subprocess.Popen(
        [sys.executable, "-m", "b24pipe", "run", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http(port, third, timeout=60)
    finally:
        os.killpg(third.pid, signal.SIGINT)
        assert third.wait(timeout=60) == 0
