"""`b24pipe run` when no Bitrix24 app is configured (`B24_CLIENT_ID` unset): a demo that
shows the pipeline doing its job against the simulator, on a fresh clone.

`Demo.prepare` starts `b24pipe sim` on a free port (its output in `<var>/simulator.log`) and
points the pipeline's environment at it (`simportal.pipeline_env`), with the handlers of
`B24PIPE_HANDLERS` or else the bundled example (`b24pipe.example`). Once the ingress
answers, `Demo.begin` installs the app on a demo portal through the real install flow, and a
thread plays a person editing deals (one edit every `EDIT_EVERY` seconds) while printing the
live view (b24pipe.liveview) on stdout whenever its figures change. Lines typed on stdin:
`s` a storm of `STORM` edits at once, `f` an edit the example handler fails on.
`stop_traffic` ends the edits before the pipeline stops; `close` stops the simulator after it.
"""

from __future__ import annotations

import argparse
import logging
import random
import secrets
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import IO

import redis

from b24pipe import liveview
from b24pipe.redisserver import free_port
from b24pipe.sim.client import SimError
from b24pipe.simportal import (
    AppPortal,
    SimulatorError,
    install_app,
    launch_simulator,
    pipeline_env,
    stop_simulator,
    wait_answering,
)
from shared.keys import Keys
from shared.logs import log
from shared.settings import Settings

EXAMPLE_HANDLERS = "b24pipe.example"
DEALS = 5
EDIT_EVERY = 2.0
STORM = 100
VIEW_EVERY = 1.0

logger = logging.getLogger("b24pipe.demo")


def wanted(settings: Settings) -> bool:
    """The demo runs when no Bitrix24 app is configured: a real app has a client id."""
    return settings.client_id is None


def _metrics(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (a local http:// URL we built)
            return str(answer.read().decode())
    except OSError:
        return ""


class Demo:
    def __init__(self, args: argparse.Namespace, settings: Settings, out: IO[str] = sys.stdout) -> None:
        self.args = args
        self.settings = settings
        self.out = out
        self.metrics_port = free_port()
        self.stopping = threading.Event()
        self.storm = threading.Event()
        self.fail = threading.Event()
        self.thread: threading.Thread | None = None
        self.sim_process: subprocess.Popen[bytes] | None = None
        self.portal: AppPortal | None = None

    @property
    def worker_args(self) -> list[str]:
        """`--concurrency N` gives the workers ports P..P+N-1."""
        return ["--metrics-port", str(self.metrics_port)]

    def prepare(self, env: dict[str, str]) -> None:
        """Start the simulator and set `env` (the pipeline's environment) to use it."""
        self.args.var.mkdir(parents=True, exist_ok=True)
        with (self.args.var / "simulator.log").open("ab") as output:
            self.sim_process, self.sim = launch_simulator(
                free_port(), "demo.app.client", "demo-app-client-secret", output, cwd=Path.cwd()
            )
        env.update(pipeline_env(self.sim, f"http://127.0.0.1:{self.args.port}"))
        env["B24PIPE_HANDLERS"] = ",".join(self.settings.handlers) or EXAMPLE_HANDLERS
        if "namespace" not in self.settings.model_fields_set:  # B24PIPE_NAMESPACE unset
            # the simulated world ends with the run: a later run must not replay its leftover
            # jobs (retries, a storm's tail) against portals that no longer exist
            env["B24PIPE_NAMESPACE"] = f"demo-{secrets.token_hex(4)}"
        self.namespace = env.get("B24PIPE_NAMESPACE", self.settings.namespace)
        self.env = env
        self._write_env_file(env)
        self.say(
            "demo: no Bitrix24 app is configured (B24_CLIENT_ID is unset), so a simulated Bitrix24 "
            f"runs at {self.sim.base_url}; handlers: {env['B24PIPE_HANDLERS']}; namespace: {self.namespace}"
        )

    def _write_env_file(self, env: dict[str, str]) -> None:
        """`<var>/demo.env`: the demo's settings, so that `b24pipe status`, `portals doctor`
        and the other commands in another terminal see the pipeline as it runs (its
        namespace, its simulated Bitrix24). Private to the user, like `<var>/token.key`."""
        names = (
            "REDIS_URL",
            "B24PIPE_TOKEN_KEYS",
            "B24PIPE_NAMESPACE",
            "B24PIPE_HANDLERS",
            *pipeline_env(self.sim, "").keys(),
        )
        lines = [f"{name}={env[name]}\n" for name in names if name in env]
        path = self.args.var / "demo.env"
        path.touch(mode=0o600)
        path.write_text("".join(lines))

    def begin(self, ingress: subprocess.Popen[bytes]) -> None:
        self.thread = threading.Thread(target=self._main, args=(ingress,), name="demo", daemon=True)
        self.thread.start()
        if sys.stdin is not None and not sys.stdin.closed:
            threading.Thread(target=self._commands, name="demo-input", daemon=True).start()

    def stop_traffic(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=15)

    def close(self) -> None:
        if self.sim_process is not None:
            stop_simulator(self.sim_process)

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    # -- the demo thread -----------------------------------------------------------------------
    def _main(self, ingress: subprocess.Popen[bytes]) -> None:
        try:
            wait_answering(f"http://127.0.0.1:{self.args.port}/healthz", ingress, "the ingress")
            connection = redis.Redis.from_url(self.env["REDIS_URL"])
            # deals already there before the app comes (no events for them): a storm edits
            # each once (identical events within a second would be recognised as duplicates),
            # the trickle edits the first few
            blank = self.sim.create_portal()
            seeded = self.sim.apply_changes(
                blank.member_id,
                [{"action": "add", "fields": {"TITLE": f"Demo deal {n}"}} for n in range(STORM)],
            )
            deals = [int(item) for item in seeded["ids"]]
            portal = install_app(self.sim, self.env, connection, Keys(self.namespace), blank)
            self.portal = portal
            self.say(
                f"demo: portal {portal.domain} installed through the install flow, events bound; "
                f"a person edits a deal every {EDIT_EVERY:g} s. Type s + Enter for a storm of "
                f"{STORM} edits, f + Enter for an edit the example handler fails on; Ctrl-C stops."
            )
            self._play(portal, deals)
        except (SimulatorError, SimError, OSError, redis.RedisError) as exc:
            if not self.stopping.is_set():
                log(logger, logging.ERROR, "demo stopped", error=str(exc))

    def _play(self, portal: AppPortal, deals: list[int]) -> None:
        shown = ""
        edits = 0
        next_edit = 0.0
        clock = 0.0
        while not self.stopping.wait(VIEW_EVERY / 4):
            clock += VIEW_EVERY / 4
            if self.storm.is_set():
                self.storm.clear()
                changes = [
                    {"action": "update", "id": deal, "fields": {"TITLE": f"Storm edit {edits}"}}
                    for deal in deals
                ]
                self.say(f"demo: storm of {STORM} edits")
                portal.storm(changes)
            if self.fail.is_set():
                self.fail.clear()
                # a deal the trickle never edits: its edit of the same deal within the second
                # would be an identical event (dropped as a duplicate), or its later title
                # would reach the handler's read first; either way no failure would show
                portal.edit(deals[DEALS], {"TITLE": f"Please fail {edits}"})
            if clock >= next_edit:
                edits += 1
                portal.edit(random.choice(deals[:DEALS]), {"TITLE": f"Demo deal, edit {edits}"})
                next_edit = clock + EDIT_EVERY
            if clock % VIEW_EVERY:
                continue
            line = liveview.render(self._figures(portal))
            if line.split(" ", 1)[1] != shown:
                shown = line.split(" ", 1)[1]
                self.say(line)

    def _figures(self, portal: AppPortal) -> liveview.Figures:
        ingress = _metrics(f"http://127.0.0.1:{self.args.port}/metrics")
        workers = [
            _metrics(f"http://127.0.0.1:{self.metrics_port + index}/metrics")
            for index in range(self.args.workers)
        ]
        level = portal.redis.hget(
            portal.keys.rate_bucket(portal.member_id, self.settings.rate_scope), "level"
        )
        return liveview.figures(ingress, workers, float(level) if level is not None else 0.0)

    def _commands(self) -> None:
        for line in sys.stdin:
            command = line.strip().lower()
            if command == "s":
                self.storm.set()
            elif command == "f":
                self.fail.set()
