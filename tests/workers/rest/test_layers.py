"""Each layer of the REST request path (workers/rest/layers.py) on its own: its decisions as
pure functions, then the layer built directly on `Sending` and run against the simulator
over HTTP with a real Redis. `Stored` stands in for the token layer where one is needed: it
sends with the portal record as stored now, nothing more."""

from __future__ import annotations

import os
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
import redis

from b24pipe.sim.client import SimClient
from shared.crypto import TokenCipher
from shared.keys import Keys
from shared.portals import Portal
from shared.rateplan import RatePlan
from shared.settings import load_settings
from tests.support.clientkit import install, stored
from workers.errors import (
    ApiError,
    AuthRevoked,
    BadRequest,
    OperatingLimit,
    RateLimited,
    WriteUncertain,
)
from workers.rest.client import Context, context_for
from workers.rest.layers import (
    Authorizing,
    Call,
    Cure,
    EchoMarking,
    EchoSettling,
    Exchange,
    Limiting,
    Operating,
    PortalLayer,
    Relocating,
    Resending,
    Sending,
    cure,
    final_error,
    operating_reports,
    plan_of,
    redirect_target,
    refused_pair,
    request_for,
    resend_delay,
)
from workers.rest.methodkind import Kind
from workers.rest.operating import OperatingWindow, Report
from workers.rest.transport import NOT_SENT, TIMED_OUT, Answer

T = TypeVar("T")


def _call(member_id: str, method: str = "profile", params: dict[str, Any] | None = None, **kw: Any) -> Call:
    return Call(member_id, method, dict(params or {}), (method,), **kw)


# --- pure decisions ---------------------------------------------------------------------------


def test_what_resending_gives_up_on() -> None:
    lost = ApiError("HTTP_500", method="crm.deal.add", status=500)
    assert final_error(lost, Kind.READ, keyed=False) is None
    assert final_error(lost, Kind.IDEMPOTENT, keyed=False) is None
    assert final_error(lost, Kind.WRITE, keyed=True) is None  # the key makes a repeat safe
    uncertain = final_error(lost, Kind.WRITE, keyed=False)
    assert isinstance(uncertain, WriteUncertain)
    assert (uncertain.code, uncertain.method, uncertain.status) == ("HTTP_500", "crm.deal.add", 500)
    assert final_error(ApiError(NOT_SENT), Kind.WRITE, keyed=False) is None  # it never left
    overloaded = ApiError("OVERLOAD_LIMIT")
    refused = BadRequest("ERROR_ARGUMENT")
    assert final_error(overloaded, Kind.READ, keyed=False) is overloaded
    assert final_error(refused, Kind.READ, keyed=False) is refused


def test_a_keyed_call_that_timed_out_waits_at_least_the_timeout() -> None:
    for attempt in range(1, 6):
        assert resend_delay(ApiError(TIMED_OUT), attempt, keyed=True, timeout=30) >= 30
        assert resend_delay(ApiError(TIMED_OUT), attempt, keyed=False, timeout=30) <= 8
        assert resend_delay(ApiError("HTTP_502"), attempt, keyed=True, timeout=30) <= 8


def test_the_cure_for_a_401() -> None:
    assert cure("expired_token", rotated=True, refreshed=True) is Cure.RESEND
    assert cure("NO_AUTH_FOUND", rotated=True, refreshed=False) is Cure.RESEND
    assert cure("expired_token", rotated=False, refreshed=False) is Cure.REFRESH
    assert cure("invalid_token", rotated=False, refreshed=False) is Cure.REFRESH
    assert cure("invalid_token", rotated=False, refreshed=True) is Cure.NONE  # a fresh pair refused
    assert cure("NO_AUTH_FOUND", rotated=False, refreshed=False) is Cure.NONE


def test_only_an_oauth_pairs_401_is_a_refused_pair() -> None:
    portal = Portal(member_id="m1", domain="a.bitrix24.test")
    hook = Portal(member_id="m1", domain="a.bitrix24.test", webhook_url="sealed")
    refused = Answer(401, {"error": "expired_token"})
    assert refused_pair(Exchange(portal, refused))
    assert not refused_pair(Exchange(hook, refused))
    assert not refused_pair(Exchange(portal, Answer(200, {"result": 1})))
    assert not refused_pair(Exchange(portal, None, lost=ApiError(NOT_SENT)))


def test_an_exchange_names_its_failure() -> None:
    portal = Portal(member_id="m1", domain="a.bitrix24.test")
    lost = ApiError(TIMED_OUT)
    assert Exchange(portal, None, lost=lost).failure("profile") is lost
    assert Exchange(portal, Answer(200, {"result": 1})).failure("profile") is None
    failure = Exchange(portal, Answer(401, {"error": "NO_AUTH_FOUND"})).failure("profile")
    assert isinstance(failure, AuthRevoked) and failure.method == "profile"


def test_operating_reports_of_a_call_and_of_a_batch() -> None:
    block = {"start": 1000.0, "operating": 7.5, "operating_reset_at": 1100.0}
    assert operating_reports(_call("m1"), {"result": 1, "time": block}, now=50.0) == [
        ("profile", Report(7.5, 150.0))
    ]
    assert operating_reports(_call("m1"), {"result": 1}, now=50.0) == []
    batch = _call("m1", "batch", batch={"0": ("crm.deal.get", {}), "1": ("user.admin", {})})
    payload = {"result": {"result_time": [block, {**block, "operating": 1.0}, block]}}  # PHP's list shape
    assert operating_reports(batch, payload, now=50.0) == [
        ("crm.deal.get", Report(7.5, 150.0)),
        ("user.admin", Report(1.0, 150.0)),
    ]


def test_a_portal_without_a_plan_of_its_own_uses_the_default() -> None:
    default = RatePlan(2.0, 50)
    assert plan_of(Portal(member_id="m", domain="d"), default) is default
    assert plan_of(Portal(member_id="m", domain="d", plan="custom:9/90"), default) == RatePlan(9.0, 90)
    assert plan_of(Portal(member_id="m", domain="d", plan="nonsense"), default) is default


def test_the_request_puts_the_token_in_the_body_and_the_connector_on_writes() -> None:
    cipher = TokenCipher([os.urandom(32)])
    portal = Portal(
        member_id="m1",
        domain="a.bitrix24.test",
        client_endpoint="https://a.bitrix24.test/rest/",
        auth_connector="b24pipe",
    )
    portal.seal_tokens(cipher, "access-secret", "refresh-secret", 0)
    writes = {"crm.deal.add", "batch"}.__contains__
    url, body, hosts = request_for(portal, _call("m1", "crm.deal.get", {"id": 1}), cipher, writes)
    assert (url, body, hosts) == (
        "https://a.bitrix24.test/rest/crm.deal.get.json",
        {"id": 1, "auth": "access-secret"},
        ("a.bitrix24.test",),
    )
    url, body, _ = request_for(portal, _call("m1", "crm.deal.add", v3=True), cipher, writes)
    assert url == "https://a.bitrix24.test/rest/api/crm.deal.add"
    assert body == {"auth_connector": "b24pipe", "auth": "access-secret"}
    commands = {"cmd": {"a": "crm.deal.add?fields[TITLE]=x", "b": "crm.deal.get?id=1"}}
    _, body, _ = request_for(portal, _call("m1", "batch", commands), cipher, writes)
    assert body["cmd"] == {
        "a": "crm.deal.add?fields[TITLE]=x&auth_connector=b24pipe",
        "b": "crm.deal.get?id=1",
    }
    hook = Portal(member_id="m2", domain="b.bitrix24.test")
    hook.webhook_url = cipher.encrypt("https://b.bitrix24.test/rest/1/s3cret/", hook.context("webhook_url"))
    url, body, hosts = request_for(hook, _call("m2", "profile"), cipher, writes)
    assert (url, body) == ("https://b.bitrix24.test/rest/1/s3cret/profile.json", {})
    assert "b.bitrix24.test" in hosts


def test_a_v3_redirect_names_the_method_after_api() -> None:
    assert redirect_target(_call("m1", "crm.deal.get")) == "crm.deal.get"
    assert redirect_target(_call("m1", "crm.deal.get", v3=True)) == "api/crm.deal.get"


# --- each layer against the simulator ---------------------------------------------------------


class Stored:
    """Sends with the portal record as stored now (what `Authorizing` would pass down, without
    its refreshes and 401 handling)."""

    def __init__(self, ctx: Context, inner: PortalLayer) -> None:
        self._ctx = ctx
        self._inner = inner

    async def send(self, call: Call) -> Exchange:
        return await self._inner.send(call, await self._ctx.tokens.load(call.member_id))


def _parts() -> tuple[Context, Sending]:
    ctx = context_for(load_settings())
    return ctx, Sending(ctx.transport, ctx.tokens.cipher, ctx.echoes.is_write)


def _run(ctx: Context, coro: Coroutine[Any, Any, T]) -> T:
    return ctx.runtime.run(coro)


def _installed(
    simulator: SimClient, r: redis.Redis, env: dict[str, str], plan: str = "standard", **options: Any
) -> tuple[str, Context, Sending, Portal]:
    """A simulated portal installed; its member id, the parts, and its record as stored."""
    _, member = install(simulator, r, env, plan, **options)
    ctx, sending = _parts()
    return member, ctx, sending, _run(ctx, ctx.tokens.load(member))


def test_sending_returns_a_lost_answer_instead_of_raising(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    member, ctx, sending, portal = _installed(simulator, r, env)
    simulator.faults(member, rest_drop=1, rest_500=1)
    dropped = _run(ctx, sending.send(_call(member), portal))
    assert dropped.answer is None and dropped.lost is not None
    failed = _run(ctx, sending.send(_call(member), portal))
    assert failed.answer is not None and failed.answer.status == 500
    assert _run(ctx, sending.send(_call(member), portal)).payload["result"]["ID"]


def test_resending_repeats_a_read_and_not_a_write_that_may_have_run(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    _, member = install(simulator, r, env)
    ctx, sending = _parts()
    resending = Resending(1.0, Stored(ctx, sending))
    simulator.faults(member, rest_500=2)
    assert _run(ctx, resending.send(_call(member))).payload["result"]["ID"]
    assert simulator.stats(member)["requests"]["profile"] == 3
    simulator.faults(member, rest_commit_drop=1)
    with pytest.raises(WriteUncertain):
        _run(ctx, resending.send(_call(member, "crm.deal.add", {"fields": {"TITLE": "once"}})))
    assert simulator.stats(member)["requests"]["crm.deal.add"] == 1  # ran, and not sent again


def test_relocating_follows_a_confirmed_move_and_sends_again(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    _, member = install(simulator, r, env)
    ctx, sending = _parts()
    moved = simulator.change_domain(member, f"moved-{member[:12]}.bitrix24.test")
    exchange = _run(ctx, Relocating(ctx.relocator, Stored(ctx, sending)).send(_call(member)))
    assert exchange.payload["result"]["ID"]
    assert stored(r, env, member).client_endpoint == moved.client_endpoint


class _Pinned:
    """Sends with one portal record, whatever the store says meanwhile."""

    def __init__(self, portal: Portal, inner: PortalLayer) -> None:
        self._portal = portal
        self._inner = inner

    async def send(self, call: Call) -> Exchange:
        return await self._inner.send(call, self._portal)


def test_relocating_follows_one_move_per_call(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    member, ctx, sending, before = _installed(simulator, r, env)
    moved = simulator.change_domain(member, f"moved-{member[:12]}.bitrix24.test")
    with pytest.raises(ApiError) as caught:  # the old address answers 302 again
        _run(ctx, Relocating(ctx.relocator, _Pinned(before, sending)).send(_call(member)))
    assert caught.value.code == "TOO_MANY_REDIRECTS"
    assert stored(r, env, member).client_endpoint == moved.client_endpoint  # the one move it followed


def test_authorizing_refreshes_a_stale_pair_once(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    _, member = install(simulator, r, env)
    ctx, sending = _parts()
    simulator.expire_tokens(member)  # the record still believes its token is good
    assert _run(ctx, Authorizing(ctx.tokens, sending).send(_call(member))).payload["result"]["ID"]
    assert simulator.stats(member)["refreshes"] == 1
    assert simulator.stats(member)["requests"]["profile"] == 2  # the 401, then the answer


class _RotatedMeanwhile:
    """Another process refreshes the portal's pair just before the `nth` send, which then goes
    out with the pair it replaced."""

    def __init__(self, ctx: Context, nth: int, inner: PortalLayer) -> None:
        self._ctx = ctx
        self._countdown = nth
        self._inner = inner

    async def send(self, call: Call, portal: Portal) -> Exchange:
        self._countdown -= 1
        if self._countdown == 0:
            await self._ctx.tokens.refresh(portal)
        return await self._inner.send(call, portal)


def test_authorizing_sends_again_with_a_pair_another_process_put_in_meanwhile(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    """Even after a refresh of its own: the 401 is for a pair that is no longer the stored one."""
    _, member = install(simulator, r, env)
    ctx, sending = _parts()
    simulator.expire_tokens(member)
    layer = Authorizing(ctx.tokens, _RotatedMeanwhile(ctx, 2, sending))
    assert _run(ctx, layer.send(_call(member))).payload["result"]["ID"]
    assert simulator.stats(member)["refreshes"] == 2  # its own after expired_token, the other's
    assert simulator.stats(member)["requests"]["profile"] == 3


def _operate_until_limited(
    simulator: SimClient, r: redis.Redis, env: dict[str, str], pause_at: float, max_wait: float
) -> tuple[str, OperatingLimit]:
    """A portal whose operating limit is 3 s, `profile` costing 1 s, called through `Operating`
    alone until it raises; then the portal and what it raised."""
    member, ctx, sending, portal = _installed(simulator, r, env, operating_limit=3, costs={"profile": 1})
    window = OperatingWindow(ctx.runtime.redis(env["REDIS_URL"]), Keys(env["B24PIPE_NAMESPACE"]), pause_at)
    layer = Operating(window, max_wait, sending)
    with pytest.raises(OperatingLimit) as caught:
        for _ in range(10):
            _run(ctx, layer.send(_call(member), portal))
    assert caught.value.method == "profile"
    assert _run(ctx, layer.send(_call(member, "user.admin"), portal)).payload["result"] is True  # unaffected
    return member, caught.value


def test_operating_pauses_a_method_before_bitrix24_blocks_it(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    member, limit = _operate_until_limited(simulator, r, env, pause_at=2, max_wait=0.0)
    assert limit.after > 0
    assert simulator.stats(member)["operation_time_limit"] == 0  # never asked past the pause


def test_operating_holds_a_method_bitrix24_answered_429(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    member, limit = _operate_until_limited(simulator, r, env, pause_at=1000, max_wait=5.0)  # no own pause
    assert limit.after > 5
    assert simulator.stats(member)["operation_time_limit"] == 1  # held after the first 429


def test_limiting_fills_the_bucket_after_a_503_and_waits_its_turn(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    member, ctx, sending, portal = _installed(simulator, r, env, "custom:0.5/10", drain=0.5, burst=10)
    plan = RatePlan(0.5, 10)  # a slot every 2 s: the bucket stays full between the two calls
    simulator.faults(member, foreign_burst=10)  # another app on our IP used the whole bucket
    exchange = _run(ctx, Limiting(ctx.limiter, plan, 5.0, sending).send(_call(member), portal))
    assert exchange.payload["result"]["ID"]
    assert simulator.stats(member)["query_limit_exceeded"] == 1
    before = simulator.stats(member)["requests"]["profile"]
    with pytest.raises(RateLimited):  # the bucket is full now: no room without waiting
        _run(ctx, Limiting(ctx.limiter, plan, 0.0, sending).send(_call(member), portal))
    assert simulator.stats(member)["requests"]["profile"] == before  # nothing was sent


def test_echo_marks_are_set_once_and_dropped_when_the_write_fails(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    pair, member = install(simulator, r, env)
    keys = Keys(env["B24PIPE_NAMESPACE"])
    r.hset(keys.portal(member), "user_id", str(pair.user_id))
    ctx, sending = _parts()
    portal = _run(ctx, ctx.tokens.load(member))
    deal = _run(ctx, sending.send(_call(member, "crm.deal.add", {"fields": {"TITLE": "x"}}), portal))
    deal_id = deal.payload["result"]
    marks = keys.echo_marks(member, f"deal:{deal_id}", "ONCRMDEALUPDATE", pair.user_id)
    update = _call(member, "crm.deal.update", {"id": deal_id, "fields": {"TITLE": "y"}})
    marking = EchoMarking(ctx.echoes, sending)
    _run(ctx, marking.send(update, portal))
    _run(ctx, marking.send(update, portal))  # a resend of the same call marks nothing more
    assert r.llen(marks) == 1 and update.writer == pair.user_id
    settling = EchoSettling(ctx.echoes, Resending(1.0, Stored(ctx, marking)))
    failing = _call(member, "crm.deal.update", {"id": 999999, "fields": {"TITLE": "y"}})
    with pytest.raises(BadRequest):
        _run(ctx, settling.send(failing))
    assert failing.echoes  # marked before it was sent,
    missing = keys.echo_marks(member, "deal:999999", "ONCRMDEALUPDATE", pair.user_id)
    assert r.llen(missing) == 0 and r.llen(marks) == 1  # and only its own mark dropped
