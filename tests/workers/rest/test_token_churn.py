"""Access tokens that live 2 s, 4 worker processes, 60 events each making one REST call:
every event handled, none parked, no refresh token used twice, and about one refresh per
token lifetime (the refresh margin follows the lifetime; 401s caused by another process's
rotation end in a retry with the current pair)."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path

import orjson
import pytest
import redis
from prometheus_client import Histogram

from b24pipe.sim.client import SimClient
from b24pipe.testing.workers import enqueue_many, event_dict, stop, wait_for
from bench.limiter import seed
from shared.keys import Keys
from shared.portals import Portal, Status
from shared.settings import load_settings
from tests.support.clientkit import cipher_of, client_env, done_key, install, start_logged_worker, stored
from workers.errors import ApiError
from workers.rest.client import client_for
from workers.rest.layers import AUTH_ROUNDS
from workers.rest.metrics import REFRESH_INTERVAL, REFRESH_LIFETIME_USED
from workers.rest.tokens import TokenStore, lifetime_used, needs_refresh, refresh_margin, token_lifetime

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


def test_the_refresh_margin_follows_the_token_lifetime() -> None:
    assert refresh_margin(3600) == 60 and refresh_margin(2) == pytest.approx(0.4)
    hour = Portal("m", "d", refresh_token="x", expires=10_000 + 3600, updated_at=10_000)
    assert token_lifetime(hour) == 3600
    assert not needs_refresh(hour, 10_000 + 3600 - 61) and needs_refresh(hour, 10_000 + 3600 - 59)
    short = Portal("m", "d", refresh_token="x", expires=10_002, updated_at=10_000)
    assert not needs_refresh(short, 10_001.5) and needs_refresh(short, 10_001.7)
    assert lifetime_used(short, 10_001.6) == pytest.approx(0.8)


def _observed(histogram: Histogram, upper: str) -> float:
    for metric in histogram.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("le") == upper:
                return sample.value
    return 0.0


def test_a_refresh_the_lifetime_does_not_explain_is_measured(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    _, member = install(simulator, r, env)
    b24 = client_for(load_settings(), None, member)
    early, young = _observed(REFRESH_LIFETIME_USED, "0.1"), _observed(REFRESH_INTERVAL, "60.0")
    assert simulator.expire_tokens(member) >= 1  # an hour-long token dies at once
    assert b24.call("profile")["ID"]
    assert simulator.stats(member)["refreshes"] == 1
    assert _observed(REFRESH_LIFETIME_USED, "0.1") == early + 1  # at a tiny share of its lifetime
    assert _observed(REFRESH_INTERVAL, "60.0") == young + 1  # within its first minute


def test_a_token_can_live_one_second(simulator: SimClient) -> None:
    portal = simulator.create_portal(token_ttl=1)
    pair = simulator.install(portal.member_id)
    assert simulator.rest(portal, "profile", token=pair.access_token).status == 200
    simulator.advance_clock(portal.member_id, 1.1)
    answer = simulator.rest(portal, "profile", token=pair.access_token)
    assert answer.status == 401 and answer.body["error"] == "expired_token"


def test_an_invalid_token_a_refresh_cures_parks_nothing(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    portal = simulator.create_portal()
    pair = simulator.install(portal.member_id)
    unknown = {**pair.__dict__, "access_token": "not-a-token-bitrix24-knows"}
    seed(r, env["B24PIPE_NAMESPACE"], cipher_of(env), {**unknown, "domain": portal.domain}, "standard")
    b24 = client_for(load_settings(), None, portal.member_id)
    assert b24.call("profile")["ID"]  # invalid_token, one refresh, the call goes through
    assert simulator.stats(portal.member_id)["refreshes"] == 1
    assert stored(r, env, portal.member_id).status is Status.ACTIVE


def test_tokens_rotating_under_every_call_end_in_a_retried_error_not_a_park(
    simulator: SimClient, r: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    portal = simulator.create_portal()
    pair = simulator.install(portal.member_id)
    unknown = {**pair.__dict__, "access_token": "not-a-token-bitrix24-knows"}
    seed(r, env["B24PIPE_NAMESPACE"], cipher_of(env), {**unknown, "domain": portal.domain}, "standard")
    load = TokenStore.load
    gen = 0

    async def rotating(self: TokenStore, member_id: str) -> Portal:
        """Every read finds a pair newer than the one the 401 was for."""
        nonlocal gen
        gen += 1
        return dataclasses.replace(await load(self, member_id), token_gen=gen)

    monkeypatch.setattr(TokenStore, "load", rotating)
    b24 = client_for(load_settings(), None, portal.member_id)
    with pytest.raises(ApiError) as caught:
        b24.call("profile")
    assert caught.value.code == "AUTH_CHURN" and caught.value.retryable  # the worker retries it
    assert simulator.stats(portal.member_id)["requests"]["profile"] == AUTH_ROUNDS
    assert simulator.stats(portal.member_id)["refreshes"] == 0
