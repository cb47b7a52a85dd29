"""`b24pipe status`: reads queues and portals from Redis; clear errors when it cannot."""

from __future__ import annotations

import subprocess
import sys

import orjson
import redis
from rq import Queue

from shared.crypto import TokenCipher
from shared.keys import Keys
from shared.portals import Portal, Status
from shared.redisconn import redacted


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": "/usr/bin:/bin", **env}
    return subprocess.run(
        [sys.executable, "-m", "b24pipe", "status", *args], env=full, capture_output=True, text=True
    )


def test_status_json_reports_queue_depth_and_portals(base_env, r: redis.Redis, keys: Keys, settings) -> None:
    queue = Queue(keys.events_queue, connection=r)
    for n in range(3):
        queue.enqueue("workers.dispatch.run_event", {"n": n})
    portal = Portal(member_id="m-status", domain="acme.bitrix24.test", status=Status.REAUTH)
    portal.seal_tokens(TokenCipher(settings.token_keys), "access-secret-x", "refresh-secret-y", 0)
    r.sadd(keys.portals, portal.member_id)
    r.hset(keys.portal(portal.member_id), mapping=portal.to_hash())

    done = _run(base_env, "--json")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    queues = {q["name"]: q for q in report["queues"]}
    assert queues[keys.events_queue]["depth"] == 3
    assert queues[keys.events_queue]["oldest_age_seconds"] is not None
    assert queues[keys.lifecycle_queue]["depth"] == 0
    assert report["portals"] == [
        {"member_id": "m-status", "domain": "acme.bitrix24.test", "status": "reauth", "limiter_level": 0.0}
    ]
    assert "secret" not in done.stdout

    text = _run(base_env)
    assert text.returncode == 0
    assert f"{keys.events_queue}" in text.stdout and "depth=3" in text.stdout


def test_status_unreachable_redis_is_runtime_failure(base_env) -> None:
    env = {**base_env, "REDIS_URL": "redis://user:pw-secret@127.0.0.1:1/0"}
    done = _run(env)
    assert done.returncode == 1
    assert "pw-secret" not in done.stderr
    assert "Traceback" not in done.stderr


def test_redacted_hides_password_only() -> None:
    assert redacted("redis://u:p4ss@h:1/0") == "redis://u:***@h:1/0"
    assert redacted("redis://h:1/0") == "redis://h:1/0"
