"""A worker SIGKILLed in the middle of a token refresh, with real worker processes against
the simulator.

- Killed before the authorization server answered (it never handled the request): the old
  refresh token still works, the next worker refreshes once and the portal never loses its
  authorization.
- Killed after the server issued a new pair, before it was saved: the pair is gone. The next
  refresh gets `invalid_grant` (one attempt, no more), the portal is marked as needing
  re-authorization (portals list, metric, security log) and its jobs are parked; the next
  token that arrives (`b24pipe portals add`) restores it and the parked jobs run.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import orjson
import redis

from b24pipe.redisserver import free_port
from b24pipe.sim.client import SimClient
from b24pipe.testing.workers import enqueue, text, wait_for
from shared.keys import Keys
from shared.portals import Status
from tests.support.clientkit import (
    cipher_of,
    cli,
    client_env,
    done_key,
    install,
    metric,
    scrape,
    start_logged_worker,
    stored,
)


def _done(r: redis.Redis, keys: Keys) -> list[str]:
    return [orjson.loads(raw)["event"] for raw in r.lrange(done_key(keys.ns, "profile"), 0, -1)]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def test_killed_before_the_server_answered_loses_nothing(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    env = client_env(base_env, simulator)
    pair, member = install(simulator, r, env)
    simulator.expire_tokens(member)  # the next call gets expired_token and refreshes
    simulator.faults(member, oauth_delay=15.0)
    workers.append(start_logged_worker(env, tmp_path / "first.log"))
    asked = simulator.stats(member)["oauth_requests"]
    enqueue(r, keys, "ONTESTPROFILE", member_id=member)
    assert wait_for(lambda: bool(r.exists(keys.refresh_lock(member))), timeout=60)
    # the refresh request is at the server (held there by oauth_delay) before the kill
    assert wait_for(lambda: simulator.stats(member)["oauth_requests"] == asked + 1, timeout=60)
    _kill(workers[0])
    simulator.faults(member, oauth_delay=0.0)

    workers.append(start_logged_worker(env, tmp_path / "second.log"))
    # The dead worker's job comes back; the refresh waits out the dead holder's lease.
    assert wait_for(lambda: len(_done(r, keys)) == 1, timeout=90)
    record = stored(r, env, member)
    assert record.status is Status.ACTIVE
    stats = simulator.stats(member)
    assert stats["refreshes"] == 1 and stats["refresh_reused"] == 0
    assert record.token_gen == 2  # seeded once, refreshed once
    assert record.open_refresh(cipher_of(env)) != pair.refresh_token  # the seeded pair was rotated


def test_killed_after_the_server_answered_is_detected_parked_and_restored(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    env = client_env(base_env, simulator)
    pair, member = install(simulator, r, env)
    simulator.expire_tokens(member)
    simulator.faults(member, oauth_hold=15.0)
    workers.append(start_logged_worker(env, tmp_path / "first.log"))
    first = enqueue(r, keys, "ONTESTPROFILE", member_id=member)
    assert wait_for(lambda: simulator.stats(member)["refreshes"] == 1, timeout=60)
    _kill(workers[0])  # the server issued a new pair and killed the old one: the pair is lost
    simulator.faults(member, oauth_hold=0.0)

    port = free_port()
    log = tmp_path / "second.log"
    workers.append(start_logged_worker(env, log, "--metrics-port", str(port)))
    second = enqueue(r, keys, "ONTESTPROFILE", member_id=member)
    assert wait_for(lambda: r.llen(keys.parked(member)) == 2, timeout=90)
    assert sorted(text(x) for x in r.lrange(keys.parked(member), 0, -1)) == sorted([first, second])

    # Detected with one refresh attempt, marked, visible.
    assert simulator.stats(member)["refresh_reused"] == 1
    assert stored(r, env, member).status is Status.REAUTH
    listing = cli(env, "portals", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    (row,) = [row for row in orjson.loads(listing.stdout) if row["member_id"] == member]
    assert row["status"] == "reauth" and "invalid_grant" in row["reason"]
    exposed = scrape(port)
    assert metric(exposed, "b24pipe_portals_reauth_marked_total") == 1
    assert metric(exposed, 'b24pipe_token_refresh_total{outcome="invalid_grant"}') == 1
    assert metric(exposed, "b24pipe_portals_parked") == 1
    assert metric(exposed, "b24pipe_portals_reauth") == 1
    security = [orjson.loads(line) for line in log.read_text().splitlines() if '"security"' in line]
    assert any(e["event_kind"] == "refresh_failed" and e["marked"] is True for e in security)
    assert _done(r, keys) == []

    # The next token that arrives restores the portal; the parked jobs run.
    fresh = simulator.user_tokens(member, pair.user_id)
    secrets = {k: fresh[k] for k in ("access_token", "refresh_token")} | {"expires": int(fresh["expires"])}
    record = stored(r, env, member)
    added = cli(
        env,
        "portals",
        "add",
        "--member-id",
        member,
        "--domain",
        record.domain,
        "--client-endpoint",
        record.client_endpoint,
        "--secrets-file",
        "-",
        stdin=orjson.dumps(secrets).decode(),
    )
    assert added.returncode == 0, added.stderr
    events = [orjson.loads(line) for line in added.stderr.splitlines()]
    assert any(e["event_kind"] == "reauthorized" and e["released_jobs"] == 2 for e in events)
    assert wait_for(lambda: len(_done(r, keys)) == 2, timeout=60)
    assert stored(r, env, member).status is Status.ACTIVE
    assert not r.exists(keys.parked(member))
    exposed = scrape(port)
    assert metric(exposed, "b24pipe_portals_parked") == 0 and metric(exposed, "b24pipe_portals_reauth") == 0
    assert simulator.stats(member)["refresh_reused"] == 1  # nobody tried the dead token again
