"""`b24pipe run` as a subprocess, the way a terminal runs it: its own process group (a Ctrl-C
is SIGINT to the whole group), stdout (the demo's live view) and stderr (the logs) in files,
stdin a pipe for the demo's commands."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from b24pipe.redisserver import free_port
from b24pipe.testing.workers import ROOT

HANDLED = re.compile(r" live: accepted (\d+) \| handled (\d+) \|")


def fresh_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh machine: nothing of b24pipe, Bitrix24 or Redis configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "B24PIPE_", "B24_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return {**env, **extra}


class Run:
    def __init__(
        self, directory: Path, env: dict[str, str], command: Sequence[str] | None = None, name: str = "run"
    ) -> None:
        """`command` (default `b24pipe run --port {port}`): "{port}" in it becomes `self.port`."""
        self.directory = directory
        self.port = free_port()
        self.stdout_path = directory / f"{name}.out"
        self.stderr_path = directory / f"{name}.err"
        template = command or [sys.executable, "-m", "b24pipe", "run", "--port", "{port}"]
        argv = [part.replace("{port}", str(self.port)) for part in template]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                argv,
                cwd=directory,
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def logs(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def handled(self) -> int:
        """The live view's latest `handled` figure (0 before the first line)."""
        return self._latest(2)

    def accepted(self) -> int:
        return self._latest(1)

    def _latest(self, group: int) -> int:
        counts = [int(match.group(group)) for match in HANDLED.finditer(self.output())]
        return counts[-1] if counts else 0

    def wait(self, condition: str, check: object, timeout: float = 120.0) -> None:
        """Poll `check()` until true; fail naming `condition`, with the output, if the process
        exits or `timeout` passes."""
        assert callable(check)
        until = time.monotonic() + timeout
        while not check():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"b24pipe run exited with {self.process.returncode} before {condition}:\n{self.tail()}"
                )
            if time.monotonic() > until:
                raise AssertionError(f"no {condition} within {timeout} s:\n{self.tail()}")
            time.sleep(0.2)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def interrupt(self, timeout: float = 90.0) -> int:
        """Ctrl-C: SIGINT to the whole process group; the exit status."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def tail(self) -> str:
        return f"--- stdout\n{self.output()[-3000:]}\n--- stderr\n{self.logs()[-3000:]}"
