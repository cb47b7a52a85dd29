"""A portal that changed its domain answers 302: the REST client follows it only after the
host policy and the authorization server's app.info confirm the new address."""

from __future__ import annotations

import io

import pytest
import redis

from b24pipe.sim.client import SimClient
from shared.oauth import AppInfo
from shared.settings import load_settings
from tests.support.clientkit import install, stored
from workers.errors import OutboundBlocked
from workers.rest.client import client_for, context_for
from workers.rest.relocate import moved_endpoint, refusal


def test_the_new_endpoint_is_read_from_the_redirect() -> None:
    base = "https://new.example.com/rest/"
    assert moved_endpoint(f"{base}crm.deal.get.json?x=1", "crm.deal.get") == base
    assert moved_endpoint(f"{base}crm.deal.get", "crm.deal.get") == base
    assert moved_endpoint("https://evil.example.com/login", "crm.deal.get") is None
    info = AppInfo("app", "crm", 1, True, "1", "new.example.com", "m1", base, "L")
    assert refusal(info, client_id="app", member_id="m1", endpoint=base) is None
    assert refusal(info, client_id="app", member_id="m2", endpoint=base) == "app.info names another member_id"
    assert refusal(info, client_id="app", member_id="m1", endpoint="https://x.example.com/rest/")


def test_a_confirmed_move_updates_the_record_and_the_call_goes_on(
    simulator: SimClient, r: redis.Redis, env: dict[str, str], logged: io.StringIO
) -> None:
    _, member = install(simulator, r, env)
    b24 = client_for(load_settings(), None, member)
    assert b24.call("profile")["ID"]
    moved = simulator.change_domain(member, f"moved-{member[:12]}.bitrix24.test")
    assert b24.call("profile")["ID"]
    record = stored(r, env, member)
    assert (record.domain, record.client_endpoint) == (moved.domain, moved.client_endpoint)
    assert '"event_kind":"portal_moved"' in logged.getvalue()
    assert b24.call("profile")["ID"]  # straight to the new address now
    assert simulator.stats(member)["requests"]["profile"] == 3


def test_a_move_seen_with_an_expired_token_is_confirmed_after_a_refresh(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    _, member = install(simulator, r, env)
    moved = simulator.change_domain(member, f"moved-{member[:12]}.bitrix24.test")
    simulator.expire_tokens(member)  # the record still believes its token is good
    assert client_for(load_settings(), None, member).call("profile")["ID"]
    assert stored(r, env, member).client_endpoint == moved.client_endpoint
    assert simulator.stats(member)["refreshes"] == 1


def test_a_move_the_authorization_server_does_not_confirm_changes_nothing(
    simulator: SimClient, r: redis.Redis, env: dict[str, str], logged: io.StringIO
) -> None:
    _, member = install(simulator, r, env)
    _, other = install(simulator, r, env)
    old_other = stored(r, env, other).client_endpoint
    simulator.change_domain(other, f"moved-{other[:12]}.bitrix24.test")
    # Our portal's endpoint now redirects into another portal: our token must not follow.
    r.hset(f"{env['B24PIPE_NAMESPACE']}:portal:{member}", "client_endpoint", old_other)
    before = stored(r, env, member)
    with pytest.raises(OutboundBlocked) as caught:
        client_for(load_settings(), None, member).call("profile")
    assert caught.value.code == "PORTAL_MOVE_REFUSED"
    after = stored(r, env, member)
    assert (after.domain, after.client_endpoint) == (before.domain, before.client_endpoint)
    assert simulator.stats(other)["requests"].get("profile", 0) == 0  # nothing reached it
    assert '"event_kind":"portal_move_refused"' in logged.getvalue()


def test_a_move_to_a_host_the_policy_refuses_is_not_even_asked_about(
    simulator: SimClient, r: redis.Redis, env: dict[str, str]
) -> None:
    _, member = install(simulator, r, env)
    ctx = context_for(load_settings())
    portal = stored(r, env, member)
    for target in ("https://10.0.0.7/rest/profile.json", "http://internal.example.org/rest/profile.json"):
        with pytest.raises(OutboundBlocked):
            ctx.runtime.run(ctx.relocator.follow(portal, target, "profile"))
    assert stored(r, env, member).client_endpoint == portal.client_endpoint
