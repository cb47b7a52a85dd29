"""Keep-alive refresh against real Redis and the simulator: only portals whose pair is older
than B24PIPE_KEEPALIVE_AFTER are refreshed, found through the index, by one worker per
interval; never the others."""

from __future__ import annotations

import subprocess
import time
from dataclasses import replace
from pathlib import Path

import redis

from b24pipe.sim.client import SimClient
from b24pipe.testing.workers import wait_for
from shared import portalstore as store
from shared.keys import Keys
from shared.portals import Status
from shared.settings import Settings, load_settings
from tests.support.clientkit import client_env, install, start_logged_worker, stored
from workers.portals import keepalive

IDLE = 21 * 86400  # older than the default B24PIPE_KEEPALIVE_AFTER (20 days)


def _portal(simulator: SimClient, r: redis.Redis, env: dict[str, str], keys: Keys, age: int) -> str:
    """An installed portal whose record was saved (and indexed) `age` seconds ago."""
    _, member = install(simulator, r, env)
    record = replace(stored(r, env, member), updated_at=int(time.time()) - age)
    store.run(r, store.save_portal(keys, record))
    return member


def test_only_idle_portals_are_refreshed_once_per_interval(
    simulator: SimClient, r: redis.Redis, env: dict[str, str], keys: Keys
) -> None:
    settings: Settings = load_settings()
    idle = _portal(simulator, r, env, keys, IDLE)
    busy = _portal(simulator, r, env, keys, 86400)
    marked = _portal(simulator, r, env, keys, IDLE)
    r.hset(keys.portal(marked), "status", str(Status.REAUTH))
    before = int(time.time())

    assert keepalive.run(settings, r) == [idle]
    assert simulator.stats(idle)["refreshes"] == 1
    assert simulator.stats(busy)["refreshes"] == 0 and simulator.stats(marked)["refreshes"] == 0
    assert (r.zscore(keys.token_issued, idle) or 0) >= before  # renewed: not due again for 20 days
    assert r.zscore(keys.token_issued, marked) is None  # nothing to keep alive until a new token
    assert stored(r, env, idle).status is Status.ACTIVE

    # Another worker in the same interval does nothing, not even look.
    older = _portal(simulator, r, env, keys, IDLE)
    assert keepalive.run(settings, r) == []
    assert simulator.stats(older)["refreshes"] == 0
    # Next interval: the new idle portal only.
    r.delete(keys.keepalive_lock)
    assert keepalive.run(settings, r) == [older]
    assert simulator.stats(idle)["refreshes"] == 1


def test_workers_keep_idle_portals_alive(
    simulator: SimClient,
    r: redis.Redis,
    env: dict[str, str],
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    idle = _portal(simulator, r, env, keys, IDLE)
    busy = _portal(simulator, r, env, keys, 3600)
    worker_env = client_env(base_env, simulator, B24PIPE_KEEPALIVE_INTERVAL="1")
    for n in range(2):
        workers.append(start_logged_worker(worker_env, tmp_path / f"worker{n}.log"))
    assert wait_for(lambda: simulator.stats(idle)["refreshes"] == 1, timeout=60)
    assert not wait_for(lambda: simulator.stats(idle)["refreshes"] > 1, timeout=3)
    assert simulator.stats(busy)["refreshes"] == 0
    assert simulator.stats(idle)["refresh_reused"] == 0
