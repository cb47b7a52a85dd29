"""`b24pipe run`: the whole pipeline for local use, in one foreground process group.

Starts an embedded Redis-compatible server with AOF under `./var/redis` when `REDIS_URL`
is unset (its URL in `./var/redis.url` while it runs), generates a token key into
`./var/token.key` when `B24PIPE_TOKEN_KEYS` is unset, then the ingress and the workers as
child processes. Ctrl-C (or SIGTERM) stops them in
order: ingress first (no new events), then workers (they finish their jobs), then Redis
(which writes out its AOF). The ingress and workers wait out a Redis outage by themselves;
a child that exits anyway is started again (with capped backoff), so the pipeline stays up.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from b24pipe.commands.ingress import port_free
from b24pipe.demo import Demo
from b24pipe.demo import wanted as demo_wanted
from b24pipe.errors import CommandError, UsageError
from b24pipe.redisserver import LocalServer, ServerError, start_server
from b24pipe.simportal import SimulatorError
from shared.backoff import backoff
from shared.crypto import generate_key
from shared.logs import configure_logging, log
from shared.settings import Settings

logger = logging.getLogger("b24pipe.run")
RESTART_BASE, RESTART_CAP = 1.0, 30.0  # seconds of pause before restarting a component that exited


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="ingress, workers and (embedded) Redis in the foreground")
    parser.add_argument("--host", default="127.0.0.1", help="ingress listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="ingress port (default 8080)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--var", type=Path, default=Path("var"), help="state directory (default ./var)")
    parser.set_defaults(run=run)


def token_key(var: Path) -> str:
    """The key in ./var/token.key, created (owner-only) on first use."""
    path = var / "token.key"
    if not path.exists():
        var.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_key() + "\n")
    return path.read_text().strip()


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "b24pipe", *argv], env=env)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM (the components drain on it), SIGKILL only past `timeout`; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


def hold_state_dir(var: Path) -> int:
    """Claim the state directory for this process's lifetime (an exclusive lock on
    `var/run.lock`, released by the kernel when the process ends however it ends): a second
    `b24pipe run` in the same directory must not open the running pipeline's Redis data."""
    var.mkdir(parents=True, exist_ok=True)
    fd = os.open(var / "run.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise UsageError(f"another `b24pipe run` (pid {holder}) is using {var}/; stop it first") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _keep_up(
    children: list[subprocess.Popen[bytes]],
    commands: list[list[str]],
    env: dict[str, str],
    stopping: Callable[[], bool],
) -> None:
    """Until stopped: a component that exited is started again, after a pause that grows
    with its consecutive restarts (capped), so a crash loop neither spins nor takes the
    rest of the pipeline down."""
    restarts = [0] * len(children)
    due: list[float | None] = [None] * len(children)
    while not stopping():
        for index, child in enumerate(children):
            if child.poll() is None:
                continue
            if due[index] is None:
                restarts[index] += 1
                pause = backoff(restarts[index], RESTART_BASE, RESTART_CAP, random.random())
                due[index] = time.monotonic() + pause
                log(
                    logger,
                    logging.ERROR,
                    "a component exited; restarting",
                    command=commands[index][0],
                    code=child.returncode,
                    seconds=round(pause, 1),
                )
            elif time.monotonic() >= (due[index] or 0.0):
                due[index] = None
                children[index] = _spawn(commands[index], env)
        time.sleep(0.2)


def run(args: argparse.Namespace, settings: Settings) -> int:
    hold_state_dir(args.var)
    port_free(args.host, args.port)
    configure_logging()
    if not 0 < args.port < 65536:
        raise CommandError(f"--port must be between 1 and 65535, not {args.port}")
    if args.workers < 1:
        raise CommandError("--workers must be at least 1")
    env = dict(os.environ)
    server: LocalServer | None = None
    if settings.redis_url is None:
        try:
            server = start_server(args.var / "redis")
        except ServerError as exc:
            raise CommandError(str(exc)) from None
        env["REDIS_URL"] = server.url
        # Other b24pipe commands (status, portals, failed) in another terminal find it here.
        (args.var / "redis.url").write_text(server.url + "\n")
        log(logger, logging.INFO, "embedded redis started", url=server.url, dir=str(args.var / "redis"))
    if not settings.token_keys:
        env["B24PIPE_TOKEN_KEYS"] = token_key(args.var)
        log(logger, logging.INFO, "using generated token key", path=str(args.var / "token.key"))

    # no Bitrix24 app configured: the demo against the simulator (b24pipe.demo)
    demo = Demo(args, settings) if demo_wanted(settings) else None
    if demo is not None:
        try:
            demo.prepare(env)
        except SimulatorError as exc:
            if server is not None:
                server.stop()
            raise CommandError(str(exc)) from None

    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    commands = [
        ["ingress", "--host", args.host, "--port", str(args.port)],
        ["worker", "--concurrency", str(args.workers), *(demo.worker_args if demo else [])],
    ]
    children = [_spawn(command, env) for command in commands]
    log(logger, logging.INFO, "pipeline running", url=f"http://{args.host}:{args.port}/b24/events")
    if demo is not None:
        demo.begin(children[0])
    status = 0
    try:
        _keep_up(children, commands, env, lambda: stopping)
    finally:
        if demo is not None:
            demo.stop_traffic()
        for child in children:  # ingress first: no new events, then workers finish theirs
            stop_process(child)
        if demo is not None:
            demo.close()
        if server is not None:
            server.stop()
            (args.var / "redis.url").unlink(missing_ok=True)
        log(logger, logging.INFO, "pipeline stopped")
    return status
