"""The REST client inside real worker processes: an inbound-webhook portal added with
`b24pipe portals add` serves handlers like an OAuth one, and a method near its operating-time
limit is paused and resumed without an OPERATION_TIME_LIMIT ever reaching a handler."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import redis

from b24pipe.redisserver import free_port
from b24pipe.sim.client import SimClient
from b24pipe.testing.workers import enqueue, stop, wait_for
from shared.keys import Keys
from tests.support.clientkit import (
    cli,
    client_env,
    done_key,
    install,
    metric,
    scrape,
    start_logged_worker,
    stored,
)
from tests.support.secretscan import assert_no_secrets, stored_redis


def _done(r: redis.Redis, keys: Keys, what: str) -> list[dict[str, object]]:
    return [orjson.loads(raw) for raw in r.lrange(done_key(keys.ns, what), 0, -1)]


def test_an_inbound_webhook_portal_serves_handlers(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    env = client_env(base_env, simulator)
    portal = simulator.create_portal()
    simulator.install(portal.member_id)
    url = simulator.add_webhook(portal.member_id, user_id=1)
    secrets_file = tmp_path / "webhook.json"
    secrets_file.write_text(orjson.dumps({"webhook_url": url}).decode())
    added = cli(
        env,
        "portals",
        "add",
        "--member-id",
        portal.member_id,
        "--domain",
        portal.domain,
        "--client-endpoint",
        portal.client_endpoint,
        "--secrets-file",
        str(secrets_file),
    )
    assert added.returncode == 0, added.stderr
    secret = url.rstrip("/").rsplit("/", 1)[-1]
    assert secret not in repr(r.hgetall(keys.portal(portal.member_id)))  # stored encrypted
    assert stored(r, env, portal.member_id).webhook_url

    log = tmp_path / "worker.log"
    workers.append(start_logged_worker(env, log))
    for _ in range(3):
        enqueue(r, keys, "ONTESTPROFILE", member_id=portal.member_id)
    assert wait_for(lambda: len(_done(r, keys, "profile")) == 3, timeout=60)
    assert {str(row["value"]) for row in _done(r, keys, "profile")} == {"1"}  # the webhook's user
    stats = simulator.stats(portal.member_id)
    assert stats["requests"]["profile"] == 3 and stats["refreshes"] == 0
    stop(workers.pop())
    assert_no_secrets(
        {
            "worker log": log.read_text(),
            "cli": added.stdout + added.stderr,
            "redis": stored_redis(r, keys.ns),
        },
        [secret],
    )


def test_a_method_near_its_operating_limit_is_paused_and_resumed(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    env = client_env(base_env, simulator, B24PIPE_OPERATING_PAUSE_AT="4", B24PIPE_MAX_INPLACE_WAIT="1")
    pair, member = install(simulator, r, env, operating_limit=6, costs={"profile": 1})
    # Another process of the app used 4 s of `profile` in one minute (clock frozen: one minute)...
    simulator.freeze_clock(member)
    for _ in range(4):
        answer = simulator.rest(pair.client_endpoint, "profile", token=pair.access_token)
        assert answer.status == 200
    block = answer.body["time"]
    # ...nearly ten minutes ago: that minute leaves the window a few seconds from now.
    simulator.advance_clock(member, block["operating_reset_at"] - block["finish"] - 4, freeze=False)

    port = free_port()
    workers.append(start_logged_worker(env, tmp_path / "worker.log", "--metrics-port", str(port)))
    enqueue(r, keys, "ONTESTMETHOD", member_id=member, method="profile", times=3)
    assert wait_for(lambda: len(_done(r, keys, "method")) == 1, timeout=120)
    stats = simulator.stats(member)
    assert stats["operation_time_limit"] == 0  # Bitrix24 never had to refuse
    exposed = scrape(port)
    # Paused: the job was deferred (no attempt used) until the window freed, then resumed.
    assert metric(exposed, 'b24pipe_rest_deferred_total{reason="operating"}') >= 1
    assert metric(exposed, 'b24pipe_worker_jobs_total{event="other",outcome="failed"}') == 0
