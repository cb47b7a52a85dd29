"""Forged lifecycle events at a real `b24pipe ingress` process (real Redis, the simulator as
Bitrix24): a forged install during an authorization-server outage cannot hijack a real
pending install nor drop its events, unverified installs cannot fill Redis, and an
uninstall of a portal waiting for re-authorization deletes nothing. Re-verification and
uninstall confirmation run in this process, as the RQ worker runs them."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from rq import Queue

from b24pipe.redisserver import free_port
from b24pipe.sim.client import SimClient
from b24pipe.testing.ingress import ingress_process
from shared import portalstore as store
from shared.crypto import TokenCipher, digest
from shared.events import Event
from shared.keys import Keys
from shared.portals import AcceptedToken, Portal, Status
from shared.settings import load_settings
from workers.portals.lifecycle import confirm_uninstall, reverify_install
from workers.runner.metrics import QueueCollector

FORGED = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"


def post(url: str, form: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def event_form(name: str, member_id: str, token: str, entity: int, **auth: str) -> dict[str, str]:
    form = {"event": name, "ts": str(1736405807 + entity), "data[FIELDS][ID]": str(entity)}
    form.update(
        {"auth[member_id]": member_id, "auth[domain]": "x.bitrix24.ru", "auth[application_token]": token}
    )
    form.update({f"auth[{key}]": value for key, value in auth.items()})
    return form


def until_answered(url: str, form: dict[str, str], status: int, limit: float = 10) -> bool:
    """Re-send until the answer is `status` (bounded): each ingress process sees a token
    change when it next polls the portals' version, within a second."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if post(url, form) == status:
            return True
        time.sleep(0.1)
    return False


def held_ids(r: redis.Redis, keys: Keys, queue: str) -> list[str]:
    return sorted(str(job.args[0]["data"]["FIELDS"]["ID"]) for job in Queue(queue, connection=r).jobs)


@pytest.fixture
def outage_env(base_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The ingress's environment while the authorization server cannot be reached."""
    return {**base_env, "B24_OAUTH_URL": f"http://127.0.0.1:{free_port()}", "B24PIPE_HTTP_TIMEOUT": "2"}


@pytest.fixture
def outage(outage_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    with ingress_process(outage_env, port, log_path=tmp_path / "ingress.log"):
        yield f"http://127.0.0.1:{port}/b24/events"


def test_forged_install_cannot_hijack_a_pending_one_nor_drop_its_events(
    outage: str,
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    portal = simulator.create_portal()
    member = portal.member_id
    done = simulator.install(member, handler_url=outage)
    assert [d.get("status") for d in done.deliveries] == [200]  # pending: held
    token = done.application_token
    assert [post(outage, event_form("ONCRMDEALUPDATE", member, token, n)) for n in range(1, 6)] == [200] * 5
    # the forgery: same member id, made-up tokens, during the same outage
    forged = event_form("ONAPPINSTALL", member, FORGED, 0, access_token="madeup", refresh_token="madeup")
    assert post(outage, forged) == 200
    assert until_answered(outage, event_form("ONCRMDEALUPDATE", member, FORGED, 99), 200)
    assert store.run(r, store.pending_digests(keys, member)) == sorted([digest(token), digest(FORGED)])

    # the authorization server answers again: the forgery is refuted, the real one verified
    monkeypatch.chdir(tmp_path)
    for name, value in {**base_env, "B24_OAUTH_URL": simulator.oauth_url}.items():
        monkeypatch.setenv(name, value)
    assert reverify_install(member, 1, digest(FORGED)).startswith("refused")
    assert reverify_install(member, 1, digest(token)) == "verified, 6 held events released"
    assert held_ids(r, keys, keys.events_queue) == ["1", "2", "3", "4", "5"]
    assert [job.args[0]["name"] for job in Queue(keys.lifecycle_queue, connection=r).jobs] == ["ONAPPINSTALL"]
    # and the portal's next events are accepted and queued, not parked in a dead quarantine
    # (until its cached view of the tokens moves on, the ingress answers 503: the quarantine
    # it would use is released and gone, and nothing is answered 200 that is not queued)
    assert all(
        until_answered(outage, event_form("ONCRMDEALUPDATE", member, token, n), 200) for n in range(6, 9)
    )
    assert held_ids(r, keys, keys.events_queue) == ["1", "2", "3", "4", "5", "6", "7", "8"]
    assert until_answered(outage, event_form("ONCRMDEALUPDATE", member, FORGED, 100), 401)
    log = (tmp_path / "ingress.log").read_text()
    assert token not in log and FORGED not in log and done.access_token not in log


def test_an_event_nothing_can_release_is_never_answered_200(outage: str, r: redis.Redis, keys: Keys) -> None:
    """The token is still accepted as pending but its install is gone (refuted, expired):
    503, not a 200 for an event that would wait in a quarantine nobody releases."""
    assert post(outage, event_form("ONAPPINSTALL", "lost1", FORGED, 0, access_token="madeup")) == 200
    r.delete(keys.pending_install("lost1", digest(FORGED)))  # the install's record expired
    assert post(outage, event_form("ONCRMDEALUPDATE", "lost1", FORGED, 1)) == 503
    assert r.llen(keys.quarantine("lost1", digest(FORGED))) == 1  # only the install itself


def test_unverified_installs_cannot_fill_redis(
    outage_env: dict[str, str], r: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    env = {**outage_env, "B24PIPE_PENDING_MAX": "3", "B24PIPE_QUARANTINE_BYTES": str(1 << 20)}
    port = free_port()
    url = f"http://127.0.0.1:{port}/b24/events"
    with ingress_process(env, port, log_path=tmp_path / "ingress.log"):
        installs = [
            post(url, event_form("ONAPPINSTALL", f"flood{n}", FORGED, 0, access_token="madeup"))
            for n in range(5)
        ]
        assert installs == [200, 200, 200, 503, 503]
        big = "x" * 60_000
        answers = []
        for n in range(12):
            form = event_form("ONCRMDEALUPDATE", "flood0", FORGED, n + 1)
            form["data[FIELDS][BLOB]"] = big
            answers.append(post(url, form))
        # one install may hold a quarter of the 1 MiB: four such events, then 503s
        assert answers == [200] * 4 + [503] * 8
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
    held = sum(int(v) for v in r.hvals(keys.quarantine_bytes))
    assert held <= (1 << 20) // 4
    assert r.zcard(keys.pending_index) == 3
    refused = re.search(r'b24pipe_ingress_rejections_total\{reason="lifecycle_refused"\} ([0-9.]+)', metrics)
    assert refused is not None and float(refused.group(1)) == 10
    # the refused events count as lost (the B24pipeIngressUnavailable alert's outcome)
    lost = re.search(r'requests_total\{event="ONCRMDEALUPDATE",outcome="unavailable"\} ([0-9.]+)', metrics)
    assert lost is not None and float(lost.group(1)) == 8
    log = (tmp_path / "ingress.log").read_text()
    assert FORGED not in log and "Traceback" not in log


def test_uninstall_of_a_portal_needing_reauthorization_keeps_its_data(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    env = {**base_env, "B24_OAUTH_URL": simulator.oauth_url}
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    portal = simulator.create_portal()
    member = portal.member_id
    port = free_port()
    url = f"http://127.0.0.1:{port}/b24/events"
    with ingress_process(env, port, log_path=tmp_path / "ingress.log"):
        done = simulator.install(member, handler_url=url)
        assert [d.get("status") for d in done.deliveries] == [200]
        # the refresh token was lost (invalid_grant): the portal waits for re-authorization,
        # its stored pair fails whether or not the app is still installed
        stored = store.run(r, store.load_portal(keys, member))
        assert stored is not None
        reauth = replace(stored, status=Status.REAUTH, access_token="", refresh_token="")
        store.run(r, store.save_portal(keys, reauth))
        r.set(keys.chain(member, "deal:7"), 1)
        # a forged uninstall with the stolen application token, asking for the data's deletion
        assert post(url, event_form("ONAPPUNINSTALL", member, done.application_token, 0, CLEAN="1")) == 200
        jobs = [job for job in Queue(keys.lifecycle_queue, connection=r).jobs if job.args]
        uninstall = [job.args[0] for job in jobs if job.args[0].get("name") == "ONAPPUNINSTALL"]
        assert len(uninstall) == 1
        assert confirm_uninstall(uninstall[0]).startswith("unconfirmed, kept")
        kept = store.run(r, store.load_portal(keys, member))
        assert (
            kept is not None
            and kept.status is Status.REAUTH
            and kept.reason.startswith("uninstall unconfirmed")
        )
        assert r.exists(keys.chain(member, "deal:7"))
        gauges = {family.name: family.samples[0].value for family in QueueCollector(r, keys, 60).collect()}
        assert gauges["b24pipe_portals_uninstall_unconfirmed"] == 1
        # genuine events still get through
        assert post(url, event_form("ONCRMDEALUPDATE", member, done.application_token, 1)) == 200
    # the operator's purge is what deletes it
    purged = subprocess.run(
        [sys.executable, "-m", "b24pipe", "portals", "purge", member],
        env={**base_env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert purged.returncode == 0, purged.stderr
    assert store.run(r, store.load_portal(keys, member)) is None
    assert not r.exists(keys.chain(member, "deal:7")) and not r.scard(keys.uninstall_unconfirmed)


def test_a_pending_install_stored_before_the_upgrade_is_still_released(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """An older b24pipe kept one pending install per member id (no token in its keys) and
    scheduled `reverify_install(member_id, attempt)`: that job still releases its events."""
    monkeypatch.chdir(tmp_path)
    for name, value in {**base_env, "B24_OAUTH_URL": simulator.oauth_url}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    portal = simulator.create_portal()
    done = simulator.install(portal.member_id)
    record = Portal(member_id=portal.member_id, domain=portal.domain, status=Status.PENDING)
    record.seal_tokens(TokenCipher(settings.token_keys), done.access_token, done.refresh_token, done.expires)
    pending = store.PendingInstall(record, digest(done.application_token), None, False, int(time.time()))
    r.hset(f"{keys.ns}:pending:{portal.member_id}", mapping=pending.to_hash())
    events = [
        Event(id=f"e{n}", name="ONCRMDEALUPDATE", member_id=portal.member_id, data={"FIELDS": {"ID": str(n)}})
        for n in (1, 2)
    ]
    r.rpush(f"{keys.ns}:quarantine:{portal.member_id}", *(event.model_dump_json() for event in events))
    r.hset(
        keys.app_tokens(portal.member_id), digest(done.application_token), AcceptedToken("pending").encode()
    )

    assert reverify_install(portal.member_id, 1) == "verified, 2 held events released"
    assert held_ids(r, keys, keys.events_queue) == ["1", "2"]
    assert not r.exists(f"{keys.ns}:pending:{portal.member_id}", f"{keys.ns}:quarantine:{portal.member_id}")
    assert (
        store.run(r, store.load_tokens(keys, portal.member_id))[digest(done.application_token)].kind == "app"
    )


def test_an_older_pending_install_verified_last_does_not_replace_the_newer_token(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Two genuine installs (say an install and an update) pend during one outage and their
    re-verifications run newest first: both release their events, and the newest token
    stays the app's (Bitrix24 signs its events with it)."""
    monkeypatch.chdir(tmp_path)
    for name, value in {**base_env, "B24_OAUTH_URL": simulator.oauth_url}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    bounds = store.Bounds.of(settings)
    portal = simulator.create_portal()
    done = simulator.install(portal.member_id)
    now = int(time.time())
    for token, seen in (("older", now - 100), ("newer", now - 50)):
        record = Portal(member_id=portal.member_id, domain=portal.domain, status=Status.PENDING)
        record.seal_tokens(
            TokenCipher(settings.token_keys), done.access_token, done.refresh_token, done.expires
        )
        store.run(
            r,
            store.save_pending(keys, store.PendingInstall(record, digest(token), None, False, seen), bounds),
        )
        event = Event(
            id=token, name="ONCRMDEALUPDATE", member_id=portal.member_id, data={"FIELDS": {"ID": token}}
        )
        item = event.model_dump_json().encode()
        assert store.run(r, store.quarantine_push(keys, portal.member_id, digest(token), item, bounds)) == 1

    assert reverify_install(portal.member_id, 1, digest("newer")) == "verified, 1 held events released"
    assert (
        reverify_install(portal.member_id, 1, digest("older"))
        == "verified but superseded, 1 held events released"
    )
    assert held_ids(r, keys, keys.events_queue) == ["newer", "older"]
    tokens = store.run(r, store.load_tokens(keys, portal.member_id))
    assert tokens.keys() == {digest("newer")} and tokens[digest("newer")].kind == "app"
    assert store.run(r, store.pending_digests(keys, portal.member_id)) == []
