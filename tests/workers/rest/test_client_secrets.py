"""A full run leaves no secret in any log or stored exception: an install through the real
ingress, refreshes, failing jobs, a lost pair (re-authorization), the recovery by an
ONAPPUPDATE through the ingress, an inbound-webhook portal, and the CLI. Then every log
(worker, ingress, CLI output) and every failed job's stored exception is searched for every
secret that took part: access and refresh tokens, the client secret, application tokens,
the webhook secret."""

from __future__ import annotations

import functools
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from b24pipe.redisserver import free_port
from b24pipe.sim.client import SimClient
from b24pipe.testing.ingress import wait_http
from b24pipe.testing.workers import ROOT, enqueue, stop, text, wait_for
from shared.keys import Keys
from shared.portals import Status
from tests.support.clientkit import cipher_of, cli, client_env, done_key, start_logged_worker, stored
from tests.support.secretscan import assert_no_secrets, stored_redis


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        stop(proc)


def _done(r: redis.Redis, keys: Keys) -> int:
    return int(r.llen(done_key(keys.ns, "profile")))


def _failed_exceptions(r: redis.Redis, keys: Keys) -> list[str]:
    texts = []
    for queue in keys.queues:
        for job_id in r.zrange(f"rq:failed:{queue}", 0, -1):
            blob = r.hget(f"rq:job:{text(job_id)}", "exc_info")
            if blob:
                texts.append(zlib.decompress(blob if isinstance(blob, bytes) else blob.encode()).decode())
    return texts


def test_a_full_run_logs_and_stores_no_secret(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    env = client_env(base_env, simulator)
    secrets: set[str] = {env["B24_CLIENT_SECRET"]}
    logs = {name: tmp_path / f"{name}.log" for name in ("ingress", "worker")}
    outputs: list[str] = []

    port = free_port()
    with logs["ingress"].open("ab") as sink:
        ingress = subprocess.Popen(
            [sys.executable, "-m", "b24pipe", "ingress", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    processes.append(ingress)
    wait_http(port, ingress)
    processes.append(start_logged_worker(env, logs["worker"]))

    # Install through the ingress (verified with app.info on the simulator).
    portal = simulator.create_portal()
    member = portal.member_id
    installed = simulator.install(member, handler_url=f"http://127.0.0.1:{port}/b24/events")
    secrets |= {installed.access_token, installed.refresh_token, installed.application_token}
    assert wait_for(lambda: bool(r.exists(keys.portal(member))), timeout=30)

    # Refreshes: the access token expires twice under running jobs.
    cipher = cipher_of(env)
    for expected in (1, 2):
        simulator.expire_tokens(member)
        enqueue(r, keys, "ONTESTPROFILE", member_id=member)
        assert wait_for(functools.partial(lambda n: _done(r, keys) == n, expected), timeout=60)
        record = stored(r, env, member)
        secrets |= {record.open_access(cipher), record.open_refresh(cipher)}
    assert simulator.stats(member)["refreshes"] == 2

    # Failures: an unknown method (not retried) and a server that keeps failing.
    enqueue(r, keys, "ONTESTMETHOD", member_id=member, method="crm.nosuch.method")
    simulator.faults(member, rest_500=50, fault_methods=["user.current"])
    enqueue(r, keys, "ONTESTMETHOD", member_id=member, method="user.current")
    assert wait_for(lambda: len(_failed_exceptions(r, keys)) == 2, timeout=120)
    simulator.faults(member, rest_500=0, fault_methods=[])

    # A pair lost between the authorization server's answer and the save: re-authorization.
    lost = simulator.refresh(stored(r, env, member).open_refresh(cipher))
    assert lost.status == 200
    secrets |= {lost.body["access_token"], lost.body["refresh_token"]}
    simulator.expire_tokens(member)
    enqueue(r, keys, "ONTESTPROFILE", member_id=member)
    assert wait_for(lambda: r.llen(keys.parked(member)) == 1, timeout=90)
    assert stored(r, env, member).status is Status.REAUTH
    listing = cli(env, "portals", "list")
    outputs += [listing.stdout, listing.stderr]
    assert "reauth" in listing.stdout

    # The next token through the ingress (ONAPPUPDATE) restores it; the parked job runs.
    updated = simulator.update_app(member, send_event=True)
    secrets |= {updated.access_token, updated.refresh_token, updated.application_token}
    assert wait_for(lambda: _done(r, keys) == 3, timeout=60)
    assert stored(r, env, member).status is Status.ACTIVE

    # An inbound-webhook portal, added by hand.
    hooked = simulator.create_portal()
    simulator.install(hooked.member_id)
    url = simulator.add_webhook(hooked.member_id)
    webhook_secret = url.rstrip("/").rsplit("/", 1)[-1]
    secrets.add(webhook_secret)
    added = cli(
        env,
        "portals",
        "add",
        "--member-id",
        hooked.member_id,
        "--domain",
        hooked.domain,
        "--client-endpoint",
        hooked.client_endpoint,
        "--secrets-file",
        "-",
        stdin=orjson.dumps({"webhook_url": url, "application_token": "a" * 32 + "b"}).decode(),
    )
    secrets.add("a" * 32 + "b")
    outputs += [added.stdout, added.stderr]
    assert added.returncode == 0, added.stderr
    enqueue(r, keys, "ONTESTPROFILE", member_id=hooked.member_id)
    assert wait_for(lambda: _done(r, keys) == 4, timeout=60)

    for args in (("portals", "show", member), ("failed", "list"), ("status", "--json")):
        result = cli(env, *args)
        assert result.returncode == 0, result.stderr
        outputs += [result.stdout, result.stderr]
    for proc in processes:
        stop(proc)

    written = {name: path.read_text() for name, path in logs.items()}
    # The run did what it claims (so the search below searched something real).
    assert '"event_kind":"refresh_failed"' in written["worker"]
    assert '"event_kind":"reauthorized"' in written["ingress"]
    assert '"event_kind":"token_changed"' in added.stderr
    exceptions = _failed_exceptions(r, keys)
    assert any("ERROR_METHOD_NOT_FOUND" in e for e in exceptions)
    haystacks = {
        **written,
        "cli": "\n".join(outputs),
        "failed jobs": "\n".join(exceptions),
        "redis": stored_redis(r, keys.ns),
    }
    assert all(len(secret) >= 16 for secret in secrets)
    assert_no_secrets(haystacks, secrets)
