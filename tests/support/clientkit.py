"""Helpers for the REST-client tests: a simulated portal installed and seeded as the install
path writes it, the stored record, and real worker processes whose logs a test can read."""

from __future__ import annotations

import base64
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, cast

import redis

from b24pipe.sim.client import Installation, SimClient, SimPortal
from b24pipe.testing.workers import ROOT, worker_env
from bench.limiter import seed
from shared.crypto import TokenCipher
from shared.keys import Keys
from shared.portals import Portal

HANDLERS = "tests.support.client_handlers"


def done_key(ns: str, what: str) -> str:
    """List where tests/support/client_handlers.py records what its handlers got."""
    return f"{ns}:test:{what}"


def cipher_of(env: dict[str, str]) -> TokenCipher:
    return TokenCipher([base64.b64decode(env["B24PIPE_TOKEN_KEYS"])])


def install(
    simulator: SimClient, r: redis.Redis, env: dict[str, str], plan: str = "standard", **options: Any
) -> tuple[Installation, str]:
    """A simulated portal, installed, with its record seeded as the install path writes it."""
    portal: SimPortal = simulator.create_portal(**options)
    pair = simulator.install(portal.member_id)
    seed(
        r,
        env["B24PIPE_NAMESPACE"],
        cipher_of(env),
        {**pair.__dict__, "member_id": portal.member_id, "domain": portal.domain},
        plan,
    )
    return pair, portal.member_id


def stored(r: redis.Redis, env: dict[str, str], member_id: str) -> Portal:
    raw = cast("dict[bytes, bytes]", r.hgetall(Keys(env["B24PIPE_NAMESPACE"]).portal(member_id)))
    return Portal.from_hash(raw)


def client_env(base_env: dict[str, str], simulator: SimClient, **extra: str) -> dict[str, str]:
    """A worker's environment: the test handlers, the simulator as authorization server, a
    short HTTP timeout (so the refresh lease, 2 x timeout + 5 s, runs out quickly)."""
    return worker_env(
        base_env,
        B24PIPE_HANDLERS=HANDLERS,
        B24_OAUTH_URL=simulator.base_url,
        B24PIPE_HTTP_TIMEOUT="2",
        **extra,
    )


def start_logged_worker(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """A `b24pipe worker` whose stderr (the JSON logs) goes to `log`."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "b24pipe", "worker", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "b24pipe", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return cast(bytes, answer.read()).decode()


def metric(text: str, name: str) -> float:
    """The value of one sample line (`name` with its labels, exactly as exposed); 0 if absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
