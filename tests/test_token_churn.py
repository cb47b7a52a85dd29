"""Access tokens that live 2 s, 4 worker processes, 60 events each making one REST call:
every event handled, none parked, no refresh token used twice, and about one refresh per
token lifetime (the refresh margin follows the lifetime; 401s caused by another process's
rotation end in a retry with the current pair)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import orjson
import redis

from b24pipe.sim.client import SimClient
from shared.keys import Keys
from shared.portals import Status
from tests.clientkit import client_env, done_key, install, start_logged_worker, stored
from tests.workerkit import enqueue_many, event_dict, stop, wait_for

EVENTS = 60
PROCESSES = 4
LIFETIME = 2


def test_short_tokens_and_four_workers_park_nothing(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    env = client_env(base_env, simulator)
    _, member = install(simulator, r, env, "custom:50/200", drain=50, burst=200, token_ttl=LIFETIME)
    logs = [tmp_path / f"worker{i}.log" for i in range(PROCESSES)]
    for log in logs:
        workers.append(start_logged_worker(env, log))
    started = time.monotonic()
    # Spread over a few lifetimes, as events arrive: the tokens expire and rotate under load.
    for _ in range(6):
        enqueue_many(r, keys, [event_dict("ONTESTPROFILE", member) for _n in range(EVENTS // 6)])
        time.sleep(LIFETIME * 0.75)

    def handled() -> set[str]:
        return {orjson.loads(raw)["event"] for raw in r.lrange(done_key(keys.ns, "profile"), 0, -1)}

    assert wait_for(lambda: len(handled()) == EVENTS, timeout=120), f"{len(handled())} of {EVENTS} handled"
    runtime = time.monotonic() - started
    for proc in list(workers):
        stop(proc)
    workers.clear()
    stats = simulator.stats(member)
    explained = runtime / LIFETIME
    print(f"token churn: {stats['refreshes']} refreshes in {runtime:.1f}s, runtime/lifetime {explained:.1f}")
    assert stats["refresh_reused"] == 0
    assert stored(r, env, member).status is Status.ACTIVE
    assert r.llen(keys.parked(member)) == 0
    for log in logs:
        assert "job parked" not in log.read_text()
    # About once per lifetime: the margin is a fifth of it, so at most 1.25 per lifetime, plus
    # the first refresh (the seeded record does not know the 2 s lifetime) and the last one.
    assert 1 <= stats["refreshes"] <= explained * 1.25 + 2
