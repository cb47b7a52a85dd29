"""POST /b24/events end to end: a real server on a free port, real Redis."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis
from aiohttp import web

from b24pipe.testing.ingress import (
    FORM,
    INVALID_TOKEN,
    OK,
    UNAVAILABLE,
    body,
    event_id,
    queued,
    seed_portal,
    serve,
    stored_event_ids,
)
from ingress.app import ENQUEUER_KEY, LIFECYCLE_KEY
from ingress.delivery import Delivery
from shared.events import Event
from shared.keys import Keys
from shared.portals import Status
from shared.settings import Settings
from tests.support.secretscan import assert_no_secrets, raw_records

TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


def test_accepts_queues_and_deduplicates(settings: Settings, keys: Keys, r: redis.Redis) -> None:
    seed_portal(r, keys, "m1", TOKEN)

    async def scenario() -> None:
        async with serve(settings) as client:
            first = await client.post("/b24/events", data=body("m1", TOKEN), headers=FORM)
            assert first.status == 200
            assert await first.read() == b'{"status":"ok","message":"event accepted"}'
            again = await client.post("/b24/events", data=body("m1", TOKEN), headers=FORM)
            assert await again.json() == OK
            other = await client.post("/b24/events", data=body("m1", TOKEN, entity=760), headers=FORM)
            assert other.status == 200
            charset = await client.post(
                "/b24/events",
                data=body("m1", TOKEN, entity=761),
                headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
            )
            assert charset.status == 200
            as_json = await client.post(
                "/b24/events",
                json={
                    "event": "ONCRMDEALADD",
                    "data": {"FIELDS": {"ID": 9}},
                    "auth": {"member_id": "m1", "application_token": TOKEN},
                },
            )
            assert as_json.status == 200

    asyncio.run(scenario())
    assert len(queued(r, keys.events_queue)) == 4  # the duplicate was queued once
    assert queued(r, keys.lifecycle_queue) == []


def test_an_echo_and_a_persons_change_in_the_same_second_are_two_events(
    settings: Settings, keys: Keys, r: redis.Redis
) -> None:
    """Same portal, event, entity and second: the app's own write (user 1, its echo) and a
    person's (user 7) are not duplicates of each other; a repeat of either one is."""
    seed_portal(r, keys, "m1", TOKEN)
    echo, person = body("m1", TOKEN, user_id="1"), body("m1", TOKEN, user_id="7")

    async def scenario() -> list[int]:
        async with serve(settings) as client:
            return [
                (await client.post("/b24/events", data=form, headers=FORM)).status
                for form in (echo, person, echo, person)
            ]

    assert asyncio.run(scenario()) == [200] * 4
    stored = stored_event_ids(r, keys.events_queue)
    assert sorted(stored) == sorted({event_id(echo), event_id(person)})
    for job_id in queued(r, keys.events_queue):
        r.delete(b"rq:job:" + job_id)


@pytest.mark.parametrize(
    ("member_id", "token", "reason"),
    [
        ("m1", None, "missing_token"),
        ("m1", "f" * 32, "token_mismatch"),
        ("nobody", TOKEN, "unknown_portal"),
        ("gone", TOKEN, "revoked"),
    ],
)
def test_rejections_are_401_logged_and_counted(
    settings: Settings,
    keys: Keys,
    r: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    member_id: str,
    token: str | None,
    reason: str,
) -> None:
    seed_portal(r, keys, "m1", TOKEN)
    seed_portal(r, keys, "gone", TOKEN, status=Status.REVOKED)
    caplog.set_level(logging.WARNING, logger="b24pipe.security")

    async def scenario() -> str:
        async with serve(settings) as client:
            response = await client.post("/b24/events", data=body(member_id, token), headers=FORM)
            assert response.status == 401
            assert await response.read() == b'{"status":"error","error":"invalid_application_token"}'
            return await (await client.get("/metrics")).text()

    metrics = asyncio.run(scenario())
    assert f'b24pipe_ingress_rejections_total{{reason="{reason}"}} 1.0' in metrics
    assert 'b24pipe_ingress_requests_total{event="ONCRMDEALUPDATE",outcome="rejected"} 1.0' in metrics
    lines = [record for record in caplog.records if record.getMessage() == "token_rejected"]
    assert len(lines) == 1
    fields: dict[str, Any] = lines[0].fields  # type: ignore[attr-defined]
    assert fields["member_id"] == member_id
    assert fields["event"] == "ONCRMDEALUPDATE"
    assert fields["reason"] == reason
    assert fields["remote"] == "127.0.0.1"
    assert token is None or token not in str(fields)
    assert queued(r, keys.events_queue) == []


@pytest.mark.parametrize(
    ("payload", "headers", "status", "code"),
    [
        (body("m1", TOKEN, event=None), FORM, 400, "invalid_request"),
        (body(None, TOKEN), FORM, 400, "invalid_request"),
        ("event=ONX&auth=flat", FORM, 400, "invalid_request"),
        ("event=ONX&auth%5Bmember_id%5D=m1&x=%ZZ", FORM, 400, "invalid_request"),
        ("event=ONX&" + "a[b][c][d][e][f][g][h][i]=1", FORM, 400, "invalid_request"),
        ("{not json", {"Content-Type": "application/json"}, 400, "invalid_request"),
        ("event=ONX", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ("event=ONX&pad=" + "x" * (1 << 20), FORM, 413, "payload_too_large"),
    ],
)
def test_bad_requests(
    settings: Settings,
    keys: Keys,
    r: redis.Redis,
    payload: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    seed_portal(r, keys, "m1", TOKEN)

    async def scenario() -> dict[str, Any]:
        async with serve(settings) as client:
            response = await client.post("/b24/events", data=payload, headers=headers)
            assert response.status == status
            answer: dict[str, Any] = await response.json()
            return answer

    answer = asyncio.run(scenario())
    assert answer["status"] == "error"
    assert answer["error"] == code
    assert answer["detail"]
    assert TOKEN not in answer["detail"]
    assert queued(r, keys.events_queue) == []


def test_lifecycle_defaults_accept_nothing_unverified(settings: Settings, keys: Keys, r: redis.Redis) -> None:
    seed_portal(r, keys, "m1", TOKEN)
    seed_portal(r, keys, "new", "9" * 32, kind="pending", status=Status.PENDING)

    async def scenario() -> None:
        async with serve(settings) as client:
            for name in ("ONAPPINSTALL", "ONAPPUPDATE"):
                response = await client.post("/b24/events", data=body("m1", TOKEN, event=name), headers=FORM)
                assert (response.status, await response.json()) == (401, INVALID_TOKEN)
            page = await client.post("/b24/install", data={"member_id": "m1"})
            assert page.status == 401
            held = await client.post("/b24/events", data=body("new", "9" * 32), headers=FORM)
            assert (held.status, await held.json()) == (503, UNAVAILABLE)
            uninstall = await client.post(
                "/b24/events", data=body("m1", TOKEN, event="ONAPPUNINSTALL"), headers=FORM
            )
            assert uninstall.status == 200

    asyncio.run(scenario())
    assert len(queued(r, keys.lifecycle_queue)) == 1
    assert queued(r, keys.events_queue) == []


class _Recorder:
    """A lifecycle handler as the lead wires one: it may enqueue through the app's enqueuer."""

    def __init__(self, app: web.Application, keys: Keys) -> None:
        self.app = app
        self.keys = keys
        self.seen: list[tuple[str, str]] = []

    async def on_install(self, delivery: Delivery, remote: str) -> web.Response:
        self.seen.append(("install", delivery.auth.member_id))
        event: Event = delivery.to_event()
        fresh = await self.app[ENQUEUER_KEY].enqueue(event, self.keys.lifecycle_queue)
        return web.json_response({"fresh": fresh})

    async def on_update(self, delivery: Delivery, remote: str) -> web.Response:
        self.seen.append(("update", remote))
        return web.json_response({})

    async def on_install_page(self, form: dict[str, str], query: dict[str, str], remote: str) -> web.Response:
        self.seen.append(("page", ""))
        return web.Response(text="<html></html>", content_type="text/html")

    async def quarantine(self, delivery: Delivery, remote: str) -> web.Response:
        self.seen.append(("quarantine", delivery.auth.member_id))
        return web.json_response({})


def test_lifecycle_hook_points(settings: Settings, keys: Keys, r: redis.Redis) -> None:
    seed_portal(r, keys, "new", "9" * 32, kind="pending", status=Status.PENDING)
    from aiohttp.test_utils import TestClient, TestServer

    from ingress.app import create_app

    async def scenario() -> list[tuple[str, str]]:
        app = create_app(settings)
        recorder = _Recorder(app, keys)
        app[LIFECYCLE_KEY] = recorder
        async with TestClient(TestServer(app)) as client:
            installed = await client.post(
                "/b24/events", data=body("new", "9" * 32, event="ONAPPINSTALL"), headers=FORM
            )
            assert await installed.json() == {"fresh": True}
            await client.post("/b24/events", data=body("new", "9" * 32, event="ONAPPUPDATE"), headers=FORM)
            await client.post("/b24/install", data={"member_id": "new"})
            await client.post("/b24/events", data=body("new", "9" * 32), headers=FORM)
        return recorder.seen

    seen = asyncio.run(scenario())
    assert seen == [("install", "new"), ("update", "127.0.0.1"), ("page", ""), ("quarantine", "new")]
    assert len(queued(r, keys.lifecycle_queue)) == 1


def test_no_token_reaches_redis_or_logs(
    settings: Settings, keys: Keys, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    access, refresh = "acc" + "x1y2" * 18, "ref" + "z3w4" * 18
    seed_portal(r, keys, "m1", TOKEN)
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        async with serve(settings) as client:
            for entity in range(5):
                extra = {"access_token": access, "refresh_token": refresh}
                await client.post("/b24/events", data=body("m1", TOKEN, entity=entity, **extra), headers=FORM)
            await client.post(
                "/b24/events", data=body("m1", TOKEN + "0", **{"access_token": access}), headers=FORM
            )
            await client.post(
                "/b24/events", data=body("m1", TOKEN, event=None, **{"access_token": access}), headers=FORM
            )

    asyncio.run(scenario())
    job_ids = queued(r, keys.events_queue)
    assert len(job_ids) == 5
    stored: list[bytes] = []
    for key in [*r.scan_iter(match=f"*{keys.ns}*"), *(b"rq:job:" + job for job in job_ids)]:
        kind = r.type(key)
        if kind == b"hash":
            for name, value in r.hgetall(key).items():
                stored += [name, value]  # `data` is a pickle: its strings are stored as they are
        elif kind == b"list":
            stored += r.lrange(key, 0, -1)
        elif kind == b"string":
            stored.append(r.get(key) or b"")
        elif kind == b"set":
            stored += list(r.smembers(key))
    assert_no_secrets(
        {"stored": b"\n".join(stored), "log records": raw_records(caplog.records)}, [TOKEN, access, refresh]
    )
    for job_id in job_ids:
        r.delete(b"rq:job:" + job_id)


def test_revocation_reaches_a_running_process(settings: Settings, keys: Keys, r: redis.Redis) -> None:
    """The cache polls the version every 250 ms; on a loaded test machine we only require that
    the revocation is seen without a restart (the 1 s bound is the poll period's design)."""
    seed_portal(r, keys, "m1", TOKEN)

    async def scenario() -> tuple[int, list[int]]:
        async with serve(settings) as client:
            before = await client.post("/b24/events", data=body("m1", TOKEN, entity=1), headers=FORM)
            r.hset(keys.portal("m1"), "status", "revoked")
            r.incr(keys.portals_version)
            statuses: list[int] = []
            for entity in range(2, 52):  # up to ~10 s on a very slow machine
                await asyncio.sleep(0.2)
                sent = await client.post("/b24/events", data=body("m1", TOKEN, entity=entity), headers=FORM)
                statuses.append(sent.status)
                if sent.status == 401:
                    break
            return before.status, statuses

    before, after = asyncio.run(scenario())
    assert before == 200
    assert after[-1] == 401 and set(after[:-1]) <= {200}


def test_health_ready_and_metrics(settings: Settings, keys: Keys, r: redis.Redis) -> None:
    seed_portal(r, keys, "m1", TOKEN)

    async def scenario() -> str:
        async with serve(settings) as client:
            assert (await client.get("/healthz")).status == 200
            ready = await client.get("/readyz")
            assert ready.status == 200, await ready.text()
            await client.post("/b24/events", data=body("m1", TOKEN, event="ONSOMETHINGNEW"), headers=FORM)
            await client.post("/b24/events", data=body("m1", TOKEN, entity=5), headers=FORM)
            response = await client.get("/metrics")
            assert response.status == 200
            return await response.text()

    text = asyncio.run(scenario())
    assert 'b24pipe_ingress_requests_total{event="other",outcome="accepted"} 1.0' in text
    assert 'b24pipe_ingress_requests_total{event="ONCRMDEALUPDATE",outcome="accepted"} 1.0' in text
    assert "ONSOMETHINGNEW" not in text
    assert "b24pipe_ingress_request_seconds_bucket" in text
    # the per-process sums reach the histograms (flushed into prometheus_client's internals)
    assert 'b24pipe_ingress_request_seconds_bucket{le="+Inf"} 2.0' in text
    assert "b24pipe_ingress_request_seconds_count 2.0" in text
    assert "b24pipe_ingress_enqueue_batch_size_count" in text
    assert "b24pipe_ingress_enqueue_batch_size_sum 2.0" in text  # both events were written
