"""Writes whose answer was lost: what the REST client resends and what it hands to the handler.

The simulator's lost-answer faults run the method, commit it and then drop the connection,
so every case here is a write that did happen and whose caller cannot know."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest
import redis

from b24pipe.redisserver import free_port
from b24pipe.sim.client import SimClient, SimError
from b24pipe.testing.workers import wait_for
from bench.limiter import seed
from shared.keys import Keys
from shared.portals import Portal
from shared.settings import load_settings
from tests.support.clientkit import cipher_of, install, stored
from workers.errors import ApiError, BadRequest, IdempotencyKeyReused, WriteUncertain
from workers.rest.client import client_for, idempotency_key_for
from workers.rest.layers import v3_base
from workers.rest.methodkind import Kind, calls_kind, method_kind, resend_safe
from workers.rest.metrics import UNCERTAIN_WRITES
from workers.rest.transport import NOT_SENT
from workers.runner.outcome import Action, Policy, classify


def test_methods_are_classified_by_what_they_do() -> None:
    reads = ("crm.deal.get", "crm.deal.list", "profile", "app.info", "user.admin", "crm.deal.fields")
    for read in (*reads, "humanresources.node.search"):
        assert method_kind(read) is Kind.READ, read
    for same in (
        "crm.deal.update",
        "crm.deal.delete",
        "entity.item.property.set",
        "event.unbind",
        "x.remove",
    ):
        assert method_kind(same) is Kind.IDEMPOTENT, same
    for write in ("crm.deal.add", "mail.message.send", "tasks.task.start", "event.bind", "something.new"):
        assert method_kind(write) is Kind.WRITE, write
    assert calls_kind(["crm.deal.get", "crm.deal.add"]) is Kind.WRITE
    assert calls_kind(["crm.deal.get", "crm.deal.update"]) is Kind.IDEMPOTENT
    assert resend_safe(Kind.READ, False) and resend_safe(Kind.IDEMPOTENT, False)
    assert not resend_safe(Kind.WRITE, False) and resend_safe(Kind.WRITE, True)


def test_idempotency_keys_are_deterministic_per_handler_run() -> None:
    key = idempotency_key_for(("event-1", "app.handlers:create"), 1)
    assert key == idempotency_key_for(("event-1", "app.handlers:create"), 1)
    assert key != idempotency_key_for(("event-1", "app.handlers:create"), 2)
    assert key != idempotency_key_for(("event-1", "app.handlers:other"), 1)
    assert key != idempotency_key_for(("event-2", "app.handlers:create"), 1)
    assert 1 <= len(key) <= 255 and key.isascii() and key.isprintable() and " " not in key
    assert v3_base("https://a.bitrix24.test/rest/") == "https://a.bitrix24.test/rest/api/"
    assert v3_base("https://a.bitrix24.test/rest/1/s3cret/") == "https://a.bitrix24.test/rest/api/1/s3cret/"


def _titles(simulator: SimClient, endpoint: str, token: str) -> Counter[str]:
    titles: Counter[str] = Counter()
    start = 0
    while True:
        page = simulator.rest(endpoint, "crm.deal.list", {"start": start}, token=token).body
        titles.update(str(item["TITLE"]) for item in page["result"])
        if page.get("next") is None:
            return titles
        start = int(page["next"])


def _v3(url: str, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": key},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_simulator_keeps_v3_answers_by_idempotency_key(simulator: SimClient) -> None:
    portal = simulator.create_portal()
    pair = simulator.install(portal.member_id)
    url = f"{portal.client_endpoint}api/crm.deal.add"
    body = {"fields": {"TITLE": "once"}, "auth": pair.access_token}
    status, first = _v3(url, body, "key-1")
    assert status == 200 and first["result"]["item"]["id"]
    again = _v3(url, body, "key-1")
    assert again[0] == 200 and again[1]["result"] == first["result"]
    status, refused = _v3(url, {**body, "fields": {"TITLE": "other"}}, "key-1")
    assert status == 422 and refused["error"]["code"]  # v3 error shape: {error: {code, message}}
    assert _v3(url, body, "bad key")[0] == 400
    assert _titles(simulator, portal.client_endpoint, pair.access_token) == Counter({"once": 1})
    assert simulator.stats(portal.member_id)["idempotent_replays"] == 1


def test_a_lost_create_is_not_resent_but_surfaced(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    pair, member = install(simulator, r, env)
    b24 = client_for(load_settings(), None, member)
    simulator.faults(member, rest_commit_drop=1, fault_methods=["crm.deal.add"])
    counted = UNCERTAIN_WRITES.labels(method="crm.deal.add")._value.get()
    with pytest.raises(WriteUncertain) as caught:
        b24.call("crm.deal.add", {"fields": {"TITLE": "v2"}})
    assert isinstance(caught.value, ApiError) and caught.value.method == "crm.deal.add"
    assert UNCERTAIN_WRITES.labels(method="crm.deal.add")._value.get() == counted + 1
    # it did happen, exactly once: the client did not send it again
    assert _titles(simulator, pair.client_endpoint, pair.access_token) == Counter({"v2": 1})
    assert simulator.stats(member)["answers_lost"] == 1


def test_reads_and_idempotent_writes_are_resent(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    _, member = install(simulator, r, env)
    b24 = client_for(load_settings(), None, member)
    deal = b24.call("crm.deal.add", {"fields": {"TITLE": "before"}})
    simulator.faults(member, rest_commit_drop=2, fault_methods=["crm.deal.update", "crm.deal.get"])
    assert b24.call("crm.deal.update", {"id": deal, "fields": {"TITLE": "after"}}) is True
    assert b24.call("crm.deal.get", {"id": deal})["TITLE"] == "after"
    assert simulator.stats(member)["answers_lost"] == 2


def test_a_lost_v3_create_is_resent_under_its_key_and_done_once(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    pair, member = install(simulator, r, env)
    settings = load_settings()
    simulator.faults(member, rest_commit_drop=1, fault_methods=["crm.deal.add"])
    first_run = client_for(settings, None, member, ("event-7", "handlers:create"))
    result = first_run.v3("crm.deal.add", {"fields": {"TITLE": "v3"}})
    assert result["item"]["id"]
    # The handler is retried: a new client for the same (event, handler) sends the same key.
    second_run = client_for(settings, None, member, ("event-7", "handlers:create"))
    assert second_run.v3("crm.deal.add", {"fields": {"TITLE": "v3"}}) == result
    stats = simulator.stats(member)
    assert stats["answers_lost"] == 1 and stats["idempotent_replays"] == 2
    assert _titles(simulator, pair.client_endpoint, pair.access_token) == Counter({"v3": 1})
    # The same key with another body is a clear, permanent error.
    third_run = client_for(settings, None, member, ("event-7", "handlers:create"))
    with pytest.raises(IdempotencyKeyReused) as caught:
        third_run.v3("crm.deal.add", {"fields": {"TITLE": "changed"}})
    assert isinstance(caught.value, BadRequest) and not caught.value.retryable


def test_v3_errors_map_to_the_same_typed_errors(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    _, member = install(simulator, r, env)
    b24 = client_for(load_settings(), None, member)
    assert b24.v3("profile")["ID"]
    with pytest.raises(BadRequest) as caught:
        b24.v3("crm.deal.add", {"fields": "not an object"})
    assert caught.value.code == "ERROR_ARGUMENT"


def test_a_write_that_never_left_is_sent_again(
    r: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed connect sent nothing: even a create is tried again (here until the attempts
    run out), and the error is not `WriteUncertain`."""
    member = "closed-port"
    closed = f"http://127.0.0.1:{free_port()}/rest/"
    seed(r, env["B24PIPE_NAMESPACE"], cipher_of(env), _pair(member, closed), "standard")
    monkeypatch.setattr("workers.rest.layers.RESEND_BASE", 0.0)
    b24 = client_for(load_settings(), None, member)
    with pytest.raises(ApiError) as caught:
        b24.call("crm.deal.add", {"fields": {"TITLE": "never sent"}})
    assert not isinstance(caught.value, WriteUncertain) and caught.value.code == NOT_SENT


def _pair(member: str, endpoint: str) -> dict[str, Any]:
    return {
        "member_id": member,
        "domain": "127.0.0.1",
        "client_endpoint": endpoint,
        "access_token": "a" * 20,
        "refresh_token": "r" * 20,
    }


def test_a_v3_call_follows_a_confirmed_move(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    _, member = install(simulator, r, env)
    b24 = client_for(load_settings(), None, member)
    moved = simulator.change_domain(member, f"moved-{member[:12]}.bitrix24.test")
    assert b24.v3("profile")["ID"]
    assert stored(r, env, member).client_endpoint == moved.client_endpoint  # not ".../rest/api/"


def test_v3_goes_through_an_inbound_webhook(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    portal = simulator.create_portal()
    simulator.install(portal.member_id)
    url = simulator.add_webhook(portal.member_id, user_id=1)
    record = Portal(portal.member_id, portal.domain, client_endpoint=portal.client_endpoint)
    record.webhook_url = cipher_of(env).encrypt(url, record.context("webhook_url"))
    r.hset(Keys(env["B24PIPE_NAMESPACE"]).portal(portal.member_id), mapping=record.to_hash())
    b24 = client_for(load_settings(), None, portal.member_id)
    assert str(b24.v3("profile")["ID"]) == "1"
    assert b24.v3("crm.deal.add", {"fields": {"TITLE": "by webhook"}})["item"]["id"]


def test_an_answer_held_past_the_timeout_is_a_lost_answer(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    _, member = install(simulator, r, env)  # the client's timeout is 2 s (env fixture)
    b24 = client_for(load_settings(), None, member)
    simulator.faults(member, rest_commit_drop=1, rest_commit_hang=3.0, fault_methods=["crm.deal.add"])
    with pytest.raises(WriteUncertain):
        b24.call("crm.deal.add", {"fields": {"TITLE": "slow"}})
    assert simulator.stats(member)["answers_lost"] == 1


def test_lost_answer_faults_are_checked_and_keys_expire_after_a_day(simulator: SimClient) -> None:
    portal = simulator.create_portal()
    pair = simulator.install(portal.member_id)
    with pytest.raises(SimError) as bad:
        simulator.faults(portal.member_id, rest_commit_drop_rate=1.5)
    assert bad.value.status == 400
    url = f"{portal.client_endpoint}api/crm.deal.add"
    body = {"fields": {"TITLE": "daily"}, "auth": pair.access_token}
    assert _v3(url, body, "day-key")[0] == 200
    simulator.advance_clock(portal.member_id, 24 * 3600 + 1)
    fresh = simulator.user_tokens(portal.member_id, 1)["access_token"]  # the old one expired
    assert _v3(url, {**body, "auth": fresh}, "day-key")[0] == 200
    assert _titles(simulator, portal.client_endpoint, fresh) == Counter({"daily": 2})
    assert simulator.stats(portal.member_id)["idempotent_replays"] == 0


def test_the_job_follows_the_handlers_retry_policy() -> None:
    policy = Policy(max_attempts=5, base=2.0, cap=60.0)
    uncertain = WriteUncertain("CONNECTION_ERROR", "lost", method="crm.deal.add")
    assert classify(uncertain, 1, policy, 0.5).action is Action.RETRY  # like any ApiError
    reused = IdempotencyKeyReused("IDEMPOTENCY_KEY_REUSED", method="crm.deal.add", status=422)
    assert classify(reused, 1, policy, 0.5).action is Action.FAIL


def test_a_keyed_write_that_timed_out_is_resent_only_once_the_first_could_finish(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    """The first request runs 3 s, past the client's 2 s timeout. Bitrix24 runs two requests
    with one key at the same moment both; the client waits out its timeout before resending,
    so the second finds the first's answer."""
    pair, member = install(simulator, r, env)
    simulator.faults(member, rest_slow=3.0)
    b24 = client_for(load_settings(), None, member, ("event-slow", "handlers:create"))
    assert b24.v3("crm.deal.add", {"fields": {"TITLE": "slow"}})["item"]["id"]
    simulator.faults(member, rest_slow=0.0)

    def settled() -> bool:  # every request the simulator took has run to its end
        stats = simulator.stats(member)
        return bool(stats["requests"]["crm.deal.add"] == sum(stats["statuses"].values()))

    assert wait_for(settled, timeout=30)
    assert _titles(simulator, pair.client_endpoint, pair.access_token) == Counter({"slow": 1})
    assert simulator.stats(member)["idempotent_replays"] >= 1
