"""Installs, updates, uninstalls and the install page end to end: the real ingress app
with `Lifecycle` wired in, served over HTTP, driven by the Bitrix24 simulator, state in a
real Redis. The worker jobs (`workers.portals.lifecycle`) run in-process, as RQ would run them."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web
from rq import Queue

from b24pipe.redisserver import free_port
from b24pipe.sim.client import SimClient
from ingress.app import ENQUEUER_KEY, REDIS_KEY, create_app
from ingress.lifecycle import Lifecycle
from shared import portalstore as store
from shared.crypto import digest
from shared.keys import Keys
from shared.portals import Status
from shared.settings import Settings, load_settings
from tests.support.secretscan import assert_no_secrets, raw_records
from workers.portals.lifecycle import confirm_uninstall, reverify_install


class LateLifecycle:
    """Builds the real `Lifecycle` once the ingress has its Redis client and enqueuer."""

    def __init__(self) -> None:
        self.inner: Lifecycle | None = None

    def __getattr__(self, name: str) -> Any:
        assert self.inner is not None
        return getattr(self.inner, name)


class Ingress:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.stopping: asyncio.Event | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        late = LateLifecycle()
        app = create_app(self.settings, lifecycle=late)
        session = aiohttp.ClientSession()

        async def wire(app: web.Application) -> None:
            late.inner = Lifecycle(self.settings, app[REDIS_KEY], app[ENQUEUER_KEY], session)

        app.on_startup.append(wire)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self.stopping = asyncio.Event()
        self.ready.set()
        await self.stopping.wait()
        await runner.cleanup()
        await session.close()

    def __enter__(self) -> Ingress:
        self.thread.start()
        assert self.ready.wait(20)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.stopping is not None
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(20)


def post(url: str, form: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def event_form(name: str, member_id: str, domain: str, token: str, **auth: str) -> dict[str, str]:
    form = {"event": name, "ts": str(int(time.time())), "data[FIELDS][ID]": "7"}
    form.update({"auth[member_id]": member_id, "auth[domain]": domain, "auth[application_token]": token})
    form.update({f"auth[{k}]": v for k, v in auth.items()})
    return form


def until(check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture
def oauth_settings(
    simulator: SimClient, base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> Settings:
    monkeypatch.chdir(tmp_path)
    for name, value in {**base_env, "B24_OAUTH_URL": simulator.oauth_url}.items():
        monkeypatch.setenv(name, value)
    return load_settings()


@pytest.fixture
def ingress(oauth_settings: Settings) -> Iterator[Ingress]:
    with Ingress(oauth_settings) as running:
        yield running


def kinds(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "fields", {}).get("event_kind", "") for r in caplog.records]


def test_verified_install_stores_what_app_info_says(
    ingress: Ingress, simulator: SimClient, r: redis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    portal = simulator.create_portal()
    done = simulator.install(portal.member_id, handler_url=f"{ingress.url}/b24/events")
    assert [d.get("status") for d in done.deliveries] == [200], done.deliveries
    stored = store.run(r, store.load_portal(keys, portal.member_id))
    assert stored is not None and stored.status is Status.ACTIVE
    assert stored.client_endpoint == portal.client_endpoint and stored.domain == portal.domain
    tokens = store.run(r, store.load_tokens(keys, portal.member_id))
    assert tokens[digest(done.application_token)].kind == "app"
    assert Queue(keys.lifecycle_queue, connection=r).count == 1
    assert "install_verified" in kinds(caplog)
    # an ordinary event with that token is accepted
    status, _ = post(
        f"{ingress.url}/b24/events",
        event_form("ONCRMDEALUPDATE", portal.member_id, portal.domain, done.application_token),
    )
    assert status == 200
    # every secret stays out of the logs: the raw records, before the formatter masks anything
    assert_no_secrets(
        {"log records": raw_records(caplog.records)},
        [done.access_token, done.refresh_token, done.application_token],
    )


def test_forged_installs_get_401_and_nothing_is_stored(
    ingress: Ingress, simulator: SimClient, r: redis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    victim, attacker = simulator.create_portal(), simulator.create_portal()
    theirs = simulator.install(attacker.member_id)
    cases = [
        # made-up token, with the request naming an attacker's endpoints
        event_form(
            "ONAPPINSTALL",
            victim.member_id,
            victim.domain,
            "forged-app-token-0123456789abcd",
            access_token="madeup",
            server_endpoint="http://127.0.0.1:1/rest/",
            client_endpoint="http://127.0.0.1:1/rest/",
        ),
        # a real token of another portal, presented for the victim
        event_form(
            "ONAPPINSTALL",
            victim.member_id,
            victim.domain,
            "forged-app-token-0123456789abcd",
            access_token=theirs.access_token,
        ),
        # the right member but another domain
        event_form(
            "ONAPPINSTALL",
            attacker.member_id,
            "evil.example.com",
            "forged-app-token-0123456789abcd",
            access_token=theirs.access_token,
        ),
        # no access token at all
        event_form("ONAPPINSTALL", victim.member_id, victim.domain, "forged-app-token-0123456789abcd"),
    ]
    for form in cases:
        status, body = post(f"{ingress.url}/b24/events", form)
        assert (status, body) == (401, '{"status":"error","error":"invalid_application_token"}')
    for member in (victim.member_id, attacker.member_id):
        assert store.run(r, store.load_portal(keys, member)) is None
        assert store.run(r, store.load_tokens(keys, member)) == {}
    assert kinds(caplog).count("install_refused") == len(cases)


def test_non_admin_install_is_refused(
    ingress: Ingress, simulator: SimClient, r: redis.Redis, keys: Keys
) -> None:
    portal = simulator.create_portal(users=[{"id": 1, "admin": True}, {"id": 2, "admin": False}])
    done = simulator.install(portal.member_id, handler_url=f"{ingress.url}/b24/events", user_id=2)
    assert [d.get("status") for d in done.deliveries] == [401]
    assert store.run(r, store.load_portal(keys, portal.member_id)) is None


def test_unreachable_install_is_pending_then_verified_and_released(
    ingress: Ingress, simulator: SimClient, r: redis.Redis, keys: Keys
) -> None:
    portal = simulator.create_portal()
    simulator.faults(portal.member_id, oauth_down=True)
    done = simulator.install(portal.member_id, handler_url=f"{ingress.url}/b24/events")
    assert [d.get("status") for d in done.deliveries] == [200]
    assert store.run(r, store.load_portal(keys, portal.member_id)) is None
    held = digest(done.application_token)
    assert store.run(r, store.load_pending(keys, portal.member_id, held)) is not None
    form = event_form("ONCRMDEALUPDATE", portal.member_id, portal.domain, done.application_token)
    assert until(lambda: post(f"{ingress.url}/b24/events", form)[0] == 200)
    assert r.llen(keys.quarantine(portal.member_id, held)) == 2  # the install itself and the event
    assert Queue(keys.events_queue, connection=r).count == 0
    assert r.zcard(f"rq:scheduled:{keys.lifecycle_queue}") == 1  # the re-verification job

    assert reverify_install(portal.member_id, 1, held).startswith("unreachable")  # still down: backs off
    simulator.faults(portal.member_id, oauth_down=False)
    assert reverify_install(portal.member_id, 2, held) == "verified, 2 held events released"
    stored = store.run(r, store.load_portal(keys, portal.member_id))
    assert stored is not None and stored.status is Status.ACTIVE
    assert (
        store.run(r, store.load_tokens(keys, portal.member_id))[digest(done.application_token)].kind == "app"
    )
    assert Queue(keys.events_queue, connection=r).count == 1
    assert Queue(keys.lifecycle_queue, connection=r).count == 1
    assert r.llen(keys.quarantine(portal.member_id, held)) == 0


def test_unverifiable_forgery_is_dropped_with_its_quarantine(
    simulator: SimClient,
    base_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    r: redis.Redis,
    keys: Keys,
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in {**base_env, "B24_OAUTH_URL": f"http://127.0.0.1:{free_port()}"}.items():
        monkeypatch.setenv(name, value)
    with Ingress(load_settings()) as down:
        form = event_form(
            "ONAPPINSTALL",
            "forged1",
            "a.example.com",
            "forgedtoken0123456789abcdef012345",
            access_token="madeup",
        )
        assert post(f"{down.url}/b24/events", form)[0] == 200
        assert (
            store.run(r, store.load_tokens(keys, "forged1"))[digest("forgedtoken0123456789abcdef012345")].kind
            == "pending"
        )
    monkeypatch.setenv("B24_OAUTH_URL", simulator.oauth_url)
    forged = digest("forgedtoken0123456789abcdef012345")
    assert reverify_install("forged1", 1, forged).startswith("refused")
    assert store.run(r, store.load_tokens(keys, "forged1")) == {}
    assert not r.exists(keys.quarantine("forged1", forged), keys.pending_install("forged1", forged))


def test_update_adopts_new_token_with_grace(
    ingress: Ingress, simulator: SimClient, r: redis.Redis, keys: Keys
) -> None:
    portal = simulator.create_portal()
    first = simulator.install(portal.member_id, handler_url=f"{ingress.url}/b24/events")
    second = simulator.update_app(portal.member_id, version=2, send_event=True)
    assert [d.get("status") for d in second.deliveries] == [200], second.deliveries
    tokens = store.run(r, store.load_tokens(keys, portal.member_id))
    assert tokens[digest(second.application_token)].kind == "app"
    assert tokens[digest(first.application_token)].kind == "grace"
    assert tokens[digest(first.application_token)].expires_at > time.time() + 500
    # a replayed update naming another version is refused and changes nothing
    forged = event_form(
        "ONAPPUPDATE",
        portal.member_id,
        portal.domain,
        "another0123456789abcdef0123456789",
        access_token=second.access_token,
    )
    forged["data[VERSION]"] = "9"
    assert post(f"{ingress.url}/b24/events", forged)[0] == 401
    assert store.run(r, store.load_tokens(keys, portal.member_id)) == tokens


def test_uninstall_acted_on_only_when_confirmed(
    ingress: Ingress, simulator: SimClient, r: redis.Redis, keys: Keys
) -> None:
    portal = simulator.create_portal()
    done = simulator.install(portal.member_id, handler_url=f"{ingress.url}/b24/events")
    event = {"id": "u1", "name": "ONAPPUNINSTALL", "member_id": portal.member_id, "data": {"CLEAN": "1"}}
    # forged: the app is still installed, its tokens work
    assert confirm_uninstall(event).startswith("unconfirmed")
    assert store.run(r, store.load_portal(keys, portal.member_id)).status is Status.ACTIVE  # type: ignore[union-attr]
    simulator.uninstall(portal.member_id, clean=False)
    jobs = Queue(keys.lifecycle_queue, connection=r).jobs
    assert [job.args[0]["name"] for job in jobs] == ["ONAPPINSTALL", "ONAPPUNINSTALL"]
    assert confirm_uninstall(jobs[-1].args[0]) == "uninstalled"
    stored = store.run(r, store.load_portal(keys, portal.member_id))
    assert stored is not None and stored.status is Status.REVOKED and not stored.access_token
    form = event_form("ONCRMDEALUPDATE", portal.member_id, portal.domain, done.application_token)
    assert until(lambda: post(f"{ingress.url}/b24/events", form)[0] == 401)
    assert confirm_uninstall(event) == "unknown or already revoked portal"


def test_uninstall_with_clean_deletes_data(
    simulator: SimClient, oauth_settings: Settings, r: redis.Redis, keys: Keys
) -> None:
    portal = simulator.create_portal()
    done = simulator.install(portal.member_id)
    with Ingress(oauth_settings) as running:
        form = event_form(
            "ONAPPINSTALL",
            portal.member_id,
            portal.domain,
            done.application_token,
            access_token=done.access_token,
            refresh_token=done.refresh_token,
        )
        assert post(f"{running.url}/b24/events", form)[0] == 200
    r.set(keys.chain(portal.member_id, "deal:7"), 1)
    simulator.uninstall(portal.member_id, clean=True)
    event = {"id": "u2", "name": "ONAPPUNINSTALL", "member_id": portal.member_id, "data": {"CLEAN": "1"}}
    assert confirm_uninstall(event) == "uninstalled, data deleted"
    assert store.run(r, store.load_portal(keys, portal.member_id)) is None
    assert not r.exists(keys.chain(portal.member_id, "deal:7"))


def test_install_page_finishes_install(
    ingress: Ingress, simulator: SimClient, r: redis.Redis, keys: Keys
) -> None:
    portal = simulator.create_portal()
    done = simulator.install(
        portal.member_id, install_url=f"{ingress.url}/b24/install", lifecycle_to_handler=False
    )
    page = [
        d for d in done.deliveries if d.get("kind") == "install_page" or "install" in str(d.get("url", ""))
    ]
    assert page and page[0].get("status") == 200, done.deliveries
    stored = store.run(r, store.load_portal(keys, portal.member_id))
    assert stored is not None and stored.status is Status.ACTIVE
    status, html = post(
        f"{ingress.url}/b24/install?DOMAIN={portal.domain}",
        {
            "AUTH_ID": done.access_token,
            "member_id": portal.member_id,
            "APPLICATION_TOKEN": done.application_token,
        },
    )
    assert status == 200 and "BX24.installFinish()" in html
    status, html = post(
        f"{ingress.url}/b24/install?DOMAIN={portal.domain}",
        {"AUTH_ID": "forged", "member_id": portal.member_id, "APPLICATION_TOKEN": "x" * 32},
    )
    assert status == 401 and "installFinish" not in html
