"""The REST client against the Bitrix24 simulator, from real processes."""

from __future__ import annotations

import base64
import io
import multiprocessing
import os
import time
from typing import Any

import pytest
import redis

from b24pipe.sim.client import SimClient
from bench.limiter import utilisation
from shared.crypto import TokenCipher
from shared.keys import Keys
from shared.portals import Status
from shared.settings import load_settings
from tests.support.clientkit import install
from tests.support.clientkit import stored as stored_record
from tests.support.secretscan import RawLog, assert_no_secrets
from workers.errors import OperatingLimit, ReauthRequired
from workers.rest.client import client_for

ROUNDS = 4
WORKERS = 16


def _caller(env: dict[str, str], member_id: str, rounds: int, out: Any) -> None:
    os.environ.update(env)
    client = redis.Redis.from_url(env["REDIS_URL"])
    b24 = client_for(load_settings(), None, member_id)
    go = f"{env['B24PIPE_NAMESPACE']}:test:round"
    for round_no in range(1, rounds + 1):
        while int(client.get(go) or 0) < round_no:
            time.sleep(0.01)
        try:
            out.put((round_no, bool(b24.call("profile")["ID"])))
        except Exception as exc:  # reported to the test, which fails on it
            out.put((round_no, repr(exc)))


def test_sixteen_processes_refresh_once_per_expiry(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    pair, member = install(simulator, r, env, "custom:50/200", drain=50, burst=200)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_caller, args=(env, member, ROUNDS, out)) for _ in range(WORKERS)]
    for proc in procs:
        proc.start()
    try:
        for round_no in range(1, ROUNDS + 1):
            before = simulator.stats(member)["refreshes"]
            assert simulator.expire_tokens(member) >= 1
            r.set(f"{env['B24PIPE_NAMESPACE']}:test:round", round_no)
            results = [out.get(timeout=60) for _ in procs]
            assert results == [(round_no, True)] * WORKERS
            stats = simulator.stats(member)
            assert stats["refreshes"] - before == 1
            assert stats["refresh_reused"] == 0
    finally:
        for proc in procs:
            proc.join(timeout=20)
            if proc.exitcode is None:
                proc.kill()
    # The stored refresh token is the newest: one more refresh with it works.
    stored = stored_record(r, env, member)
    cipher = TokenCipher([base64.b64decode(env["B24PIPE_TOKEN_KEYS"])])
    assert stored.open_refresh(cipher) != pair.refresh_token
    assert simulator.refresh(stored.open_refresh(cipher)).status == 200


def _steady(env: dict[str, str], member_id: str, start: Any, seconds: float, out: Any) -> None:
    os.environ.update(env)
    b24 = client_for(load_settings(), None, member_id)
    start.wait()  # every process is up: the measured window starts now, for all at once
    until = time.time() + seconds
    done = []
    while time.time() < until:
        b24.call("profile")
        done.append(time.time())
    out.put(done)


def test_eight_processes_use_the_rate_without_query_limit(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    drain, burst, processes = 20.0, 20, 8
    _, member = install(simulator, r, {**env}, f"custom:{drain:g}/{burst}", drain=drain, burst=burst)
    env = {**env, "B24PIPE_MAX_INPLACE_WAIT": "30"}
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Barrier(processes)
    procs = [ctx.Process(target=_steady, args=(env, member, start, 5.0, out)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    times = sorted(t for _ in procs for t in out.get(timeout=120))
    for proc in procs:
        proc.join(timeout=20)
    assert [proc.exitcode for proc in procs] == [0] * processes
    assert len(times) > burst  # calls past the burst: the utilisation below measures a rate
    assert simulator.stats(member)["query_limit_exceeded"] == 0
    # Achieved rate after the burst (utilisation skips the first `burst` answers), all processes up.
    assert utilisation(times, drain, burst) >= 0.9


def test_lost_pair_is_detected_marked_and_recovered(
    simulator: SimClient, r: redis.Redis, env: dict[str, str], logged: io.StringIO, raw_log: RawLog
) -> None:
    pair, member = install(simulator, r, env, "standard")
    b24 = client_for(load_settings(), None, member)
    assert b24.call("profile")["ID"]
    # A refresh whose answer never got saved (the process died): Bitrix24 has rotated the pair.
    assert simulator.refresh(pair.refresh_token).status == 200
    simulator.expire_tokens(member)
    with pytest.raises(ReauthRequired) as caught:
        b24.call("profile")
    stored = stored_record(r, env, member)
    assert stored.status is Status.REAUTH
    with pytest.raises(ReauthRequired):
        b24.call("profile")  # parked: no further refresh attempts
    # The next token that arrives (install page, update, portals add) restores the portal.
    fresh = simulator.user_tokens(member, pair.user_id)
    cipher = TokenCipher([base64.b64decode(env["B24PIPE_TOKEN_KEYS"])])
    stored.seal_tokens(cipher, fresh["access_token"], fresh["refresh_token"], int(time.time()) + 3600)
    stored.status = Status.ACTIVE
    r.hset(Keys(env["B24PIPE_NAMESPACE"]).portal(member), mapping=stored.to_hash())
    assert b24.call("profile")["ID"]
    assert "refresh_failed" in logged.getvalue()
    assert_no_secrets(
        {
            "log": logged.getvalue(),
            "raw log": raw_log.text,
            "exception": repr(caught.value) + str(caught.value),
        },
        [pair.access_token, pair.refresh_token, fresh["access_token"], env["B24_CLIENT_SECRET"]],
    )


def test_transient_faults_are_retried(simulator: SimClient, r: redis.Redis, env: dict[str, str]) -> None:
    _, member = install(simulator, r, env, "standard")
    simulator.faults(member, rest_500=1, rest_html=1, rest_drop=1)
    assert client_for(load_settings(), None, member).call("profile")["ID"]
    assert simulator.stats(member)["statuses"].get("500", 0) >= 1


def test_a_method_near_its_operating_limit_is_paused(
    simulator: SimClient, r: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("B24PIPE_OPERATING_PAUSE_AT", "4")
    monkeypatch.setenv("B24PIPE_MAX_INPLACE_WAIT", "0")
    _, member = install(simulator, r, env, "standard", operating_limit=6, costs={"profile": 1})
    b24 = client_for(load_settings(), None, member)
    with pytest.raises(OperatingLimit) as caught:
        for _ in range(20):
            b24.call("profile")
    assert caught.value.after > 0
    assert simulator.stats(member)["operation_time_limit"] == 0
    assert b24.call("user.admin") is True  # other methods are unaffected


def test_binding_is_repeatable_without_duplicates(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    from workers.portals.binding import bind_portal

    _, member = install(simulator, r, env, "standard")
    settings = load_settings(public_url="http://127.0.0.1:9")
    first = bind_portal(settings, member, ["ONCRMDEALUPDATE"])
    assert first is not None and "ONCRMDEALUPDATE" in first.report()["bound"]
    second = bind_portal(settings, member, ["ONCRMDEALUPDATE"])
    assert second is not None and second.bind == () and second.unbind == ()
    bound = client_for(settings, None, member).call("event.get")
    ours = [b["event"] for b in bound if b["handler"] == "http://127.0.0.1:9/b24/events"]
    assert sorted(ours) == sorted(set(ours)) and "ONCRMDEALUPDATE" in ours
    assert bind_portal(load_settings(), member, []) is None  # no B24PIPE_PUBLIC_URL: skipped


def test_batch_answers_in_both_php_shapes_and_call_many_in_order(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    _, member = install(simulator, r, env, "standard")
    b24 = client_for(load_settings(), None, member)
    ids = b24.call_many("crm.deal.add", [{"fields": {"TITLE": f"deal {i}"}} for i in range(120)])
    assert len(set(ids)) == 120
    deals = b24.call_many("crm.deal.get", [{"id": deal_id} for deal_id in ids])
    assert [deal["TITLE"] for deal in deals] == [f"deal {i}" for i in range(120)]
    assert simulator.stats(member)["requests"]["batch"] == 6  # 240 calls in batches of 50
    # keys 0..n-1 all answered: PHP sends a JSON list; one failed in the middle: an object
    every = b24.batch([("crm.deal.get", {"id": ids[0]}), ("crm.deal.get", {"id": ids[1]})])
    assert every.result["1"]["TITLE"] == "deal 1" and not every.errors
    gap = b24.batch([("crm.deal.get", {"id": ids[0]}), ("crm.deal.get", {"id": 999999}), ("user.admin", {})])
    assert set(gap.result) == {"0", "2"} and set(gap.errors) == {"1"}
    with pytest.raises(Exception, match="Not found"):
        b24.call_many("crm.deal.get", [{"id": ids[0]}, {"id": 999999}])


def test_update_if_changed_writes_only_what_differs(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    _, member = install(simulator, r, env, "standard")
    b24 = client_for(load_settings(), None, member)
    deal = b24.call("crm.deal.add", {"fields": {"TITLE": "a", "OPPORTUNITY": 5}})
    assert b24.update_if_changed("crm.deal", deal, {"TITLE": "b", "OPPORTUNITY": "5"}) == {"TITLE": "b"}
    assert b24.update_if_changed("crm.deal", deal, {"TITLE": "b", "OPPORTUNITY": 5}) == {}
    assert b24.call("crm.deal.get", {"id": deal})["TITLE"] == "b"
    assert simulator.stats(member)["requests"]["crm.deal.update"] == 1  # the second wrote nothing


def test_writes_carry_the_portals_auth_connector(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    pair, member = install(simulator, r, env, "standard")
    r.hset(Keys(env["B24PIPE_NAMESPACE"]).portal(member), "auth_connector", "b24pipe")
    b24 = client_for(load_settings(), None, member)
    assert b24.call(
        "event.bind", {"event": "ONCRMDEALUPDATE", "event_type": "offline", "auth_connector": "b24pipe"}
    )
    ids = b24.call_many("crm.deal.add", [{"fields": {"TITLE": "x"}}] * 3)
    b24.call("crm.deal.update", {"id": ids[0], "fields": {"TITLE": "ours"}})
    b24.call_many("crm.deal.update", [{"id": i, "fields": {"TITLE": "ours too"}} for i in ids])
    assert simulator.stats(member)["offline_queue"] == 0  # our own writes are not queued
    simulator.change_entity(member, id=ids[1], fields={"TITLE": "a person"}, user_id=2)
    plain = {"id": ids[2], "fields": {"TITLE": "no connector"}}
    assert (
        simulator.rest(pair.client_endpoint, "crm.deal.update", plain, token=pair.access_token).status == 200
    )
    assert simulator.stats(member)["offline_queue"] == 2  # a person's change and a write without it


def test_refused_batch_commands_release_their_echo_marks(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    pair, member = install(simulator, r, env, "standard")
    keys = Keys(env["B24PIPE_NAMESPACE"])
    r.hset(keys.portal(member), "user_id", str(pair.user_id))
    b24 = client_for(load_settings(), None, member)
    deal = b24.call("crm.deal.add", {"fields": {"TITLE": "x"}})
    answer = b24.batch({"ok": ("crm.deal.update", {"id": deal, "fields": {"TITLE": "y"}}),
                        "bad": ("crm.deal.update", {"id": 999999, "fields": {"TITLE": "y"}})})  # fmt: skip
    assert set(answer.errors) == {"bad"}
    assert r.llen(keys.echo_marks(member, f"deal:{deal}", "ONCRMDEALUPDATE", pair.user_id)) == 1
    assert r.llen(keys.echo_marks(member, "deal:999999", "ONCRMDEALUPDATE", pair.user_id)) == 0


def test_a_bucket_filled_by_another_app_costs_one_503(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    _, member = install(simulator, r, env, "custom:5/10", drain=5, burst=10)
    simulator.faults(member, foreign_burst=10)  # another app on our IP just used the whole bucket
    b24 = client_for(load_settings(), None, member)
    assert all(b24.call("profile")["ID"] for _ in range(6))
    # The first refusal fills our bucket too: from then on every process spaces its calls.
    assert 1 <= simulator.stats(member)["query_limit_exceeded"] <= 2


def test_a_portal_added_without_its_user_learns_it_at_the_first_refresh(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    pair, member = install(simulator, r, env, "standard")  # seeded as `portals add` does: user 0
    assert stored_record(r, env, member).user_id == 0
    simulator.expire_tokens(member)
    assert client_for(load_settings(), None, member).call("profile")["ID"]
    assert stored_record(r, env, member).user_id == pair.user_id  # echo marks are keyed by it from now on
