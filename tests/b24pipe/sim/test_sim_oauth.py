"""The simulator's authorization server and install lifecycle behave as Bitrix24's do."""

from __future__ import annotations

import uuid

import pytest

from b24pipe.sim.client import Installation, SimClient, SimPortal


@pytest.fixture
def portal(simulator: SimClient) -> SimPortal:
    return simulator.create_portal()


@pytest.fixture
def installed(simulator: SimClient, portal: SimPortal) -> Installation:
    return simulator.install(portal.member_id, handler_url=simulator.sink_url(f"h{uuid.uuid4().hex}"))


def test_refresh_rotates_and_a_used_refresh_token_fails(
    simulator: SimClient, portal: SimPortal, installed: Installation
) -> None:
    first = simulator.refresh(installed.refresh_token)
    assert first.status == 200
    assert first.body["refresh_token"] != installed.refresh_token
    assert first.body["access_token"] != installed.access_token
    assert first.body["member_id"] == portal.member_id
    assert first.body["client_endpoint"] == portal.client_endpoint
    assert first.body["expires_in"] == 3600

    reused = simulator.refresh(installed.refresh_token)
    assert (reused.status, reused.body["error"]) == (400, "invalid_grant")
    # the access token issued with the used refresh token died too; the new one works
    old = simulator.rest(portal, "user.admin", token=installed.access_token)
    assert (old.status, old.body["error"]) == (401, "invalid_token")
    assert simulator.rest(portal, "user.admin", token=first.body["access_token"]).body["result"] is True
    # the newest refresh token still works once
    assert simulator.refresh(first.body["refresh_token"]).status == 200
    stats = simulator.stats(portal.member_id)
    assert (stats["refreshes"], stats["refresh_reused"]) == (2, 1)


def test_bad_client_credentials_are_invalid_client(simulator: SimClient, installed: Installation) -> None:
    answer = simulator.call(
        f"{simulator.oauth_url}/oauth/token/",
        {
            "grant_type": "refresh_token",
            "client_id": simulator.client_id,
            "client_secret": "wrong",
            "refresh_token": installed.refresh_token,
        },
        form=True,
    )
    assert answer.body["error"] == "invalid_client"
    # nothing was consumed: the right credentials still work
    assert simulator.refresh(installed.refresh_token).status == 200


def test_authorization_code_grant_by_get(
    simulator: SimClient, portal: SimPortal, installed: Installation
) -> None:
    code = simulator.auth_code(portal.member_id, user_id=2)
    url = (
        f"{simulator.oauth_url}/oauth/token/?grant_type=authorization_code&client_id={simulator.client_id}"
        f"&client_secret={simulator.client_secret}&code={code}"
    )
    import json
    import urllib.request

    with urllib.request.urlopen(url) as response:
        body = json.loads(response.read())
    assert body["user_id"] == 2 and body["member_id"] == portal.member_id
    assert simulator.rest(portal, "user.admin", token=body["access_token"]).body["result"] is False
    again = simulator.call(url, {})
    assert again.body["error"] == "invalid_grant"


def test_app_info_on_the_authorization_server(
    simulator: SimClient, portal: SimPortal, installed: Installation
) -> None:
    answer = simulator.call(f"{simulator.oauth_url}/rest/app.info", {"auth": installed.access_token})
    result = answer.body["result"]
    assert result["client_id"] == simulator.client_id
    assert result["user_id"] == installed.user_id
    assert result["install"] == {
        "installed": True,
        "version": 1,
        "status": "L",
        "scope": "crm,user",
        "domain": portal.domain,
        "uri": result["install"]["uri"],
        "client_endpoint": portal.client_endpoint,
        "member_id": portal.member_id,
        "member_type": "PORTAL",
    }
    bad = simulator.call(f"{simulator.oauth_url}/rest/app.info", {"auth": "nope"})
    assert (bad.status, bad.body["error"]) == (401, "invalid_token")


def test_portal_methods_and_both_auth_styles(
    simulator: SimClient, portal: SimPortal, installed: Installation
) -> None:
    by_header = simulator.rest(portal, "profile", token=installed.access_token)
    assert by_header.body["result"]["ADMIN"] is True and "time" in by_header.body
    by_field = simulator.rest(portal, "app.info", {"auth": installed.access_token}, form=True)
    assert by_field.body["result"]["VERSION"] == 1 and by_field.body["result"]["INSTALLED"] is True
    user = simulator.user_tokens(portal.member_id, user_id=2)
    assert simulator.rest(portal, "user.admin", token=user["access_token"]).body["result"] is False
    missing = simulator.rest(portal, "user.admin")
    assert (missing.status, missing.body["error"]) == (401, "NO_AUTH_FOUND")
    unknown = simulator.rest(portal, "no.such.method", token=installed.access_token)
    assert (unknown.status, unknown.body["error"]) == (404, "ERROR_METHOD_NOT_FOUND")


def test_tokens_expire_by_the_virtual_clock_and_on_demand(simulator: SimClient) -> None:
    portal = simulator.create_portal(token_ttl=5)
    tokens = simulator.install(portal.member_id)
    assert simulator.rest(portal, "user.admin", token=tokens.access_token).status == 200
    simulator.advance_clock(portal.member_id, 6)
    expired = simulator.rest(portal, "user.admin", token=tokens.access_token)
    assert (expired.status, expired.body["error"]) == (401, "expired_token")
    fresh = simulator.refresh(tokens.refresh_token).body
    assert fresh["expires_in"] == 5
    assert simulator.rest(portal, "user.admin", token=fresh["access_token"]).status == 200
    assert simulator.expire_tokens(portal.member_id) >= 1
    assert simulator.rest(portal, "user.admin", token=fresh["access_token"]).body["error"] == "expired_token"


def test_install_posts_onappinstall_and_the_install_page(simulator: SimClient, portal: SimPortal) -> None:
    name = f"h{uuid.uuid4().hex}"
    tokens = simulator.install(
        portal.member_id, handler_url=simulator.sink_url(name), install_url=simulator.sink_url(f"{name}-page")
    )
    assert [d["status"] for d in tokens.deliveries] == [200, 200]
    (event,) = simulator.sink(name)
    assert event["content_type"] == "application/x-www-form-urlencoded"
    assert event["body"].startswith("event=ONAPPINSTALL&event_handler_id=")
    assert "data%5BVERSION%5D=1" in event["body"] and "auth%5Bmember_id%5D=" in event["body"]
    auth = event["form"]["auth"]
    assert auth["access_token"] == tokens.access_token and auth["refresh_token"] == tokens.refresh_token
    assert auth["application_token"] == tokens.application_token
    assert auth["member_id"] == portal.member_id and auth["client_endpoint"] == portal.client_endpoint
    assert auth["user_id"] == "1"
    (page,) = simulator.sink(f"{name}-page")
    assert page["form"]["AUTH_ID"] == tokens.access_token
    assert page["form"]["APPLICATION_TOKEN"] == tokens.application_token
    assert f"DOMAIN={portal.domain}" in page["query"]


def test_update_renews_the_application_token(simulator: SimClient, portal: SimPortal) -> None:
    name = f"h{uuid.uuid4().hex}"
    first = simulator.install(portal.member_id, handler_url=simulator.sink_url(name))
    bound = simulator.call(
        f"{portal.client_endpoint}event.bind",
        {"event": "ONCRMDEALADD", "handler": simulator.sink_url(name)},
        token=first.access_token,
    )
    assert bound.status == 200, bound.body
    silent = simulator.update_app(portal.member_id)  # the default: no ONAPPUPDATE, bindings gone
    assert silent.deliveries == [] and simulator.stats(portal.member_id)["bindings"] == []
    updated = simulator.update_app(portal.member_id, send_event=True)
    assert updated.version == 3 and updated.application_token != first.application_token
    event = simulator.sink(name)[-1]["form"]
    assert event["event"] == "ONAPPUPDATE"
    assert event["data"] == {"VERSION": "3", "PREVIOUS_VERSION": "2", "LANGUAGE_ID": "en"}
    assert event["auth"]["application_token"] == updated.application_token
    assert event["auth"]["refresh_token"] == updated.refresh_token


def test_uninstall_revokes_tokens_and_sends_clean(simulator: SimClient, portal: SimPortal) -> None:
    name = f"h{uuid.uuid4().hex}"
    tokens = simulator.install(portal.member_id, handler_url=simulator.sink_url(name))
    simulator.uninstall(portal.member_id, clean=True)
    event = simulator.sink(name)[-1]["form"]
    assert event["event"] == "ONAPPUNINSTALL" and event["data"] == {"LANGUAGE_ID": "en", "CLEAN": "1"}
    assert set(event["auth"]) == {
        "domain",
        "server_endpoint",
        "client_endpoint",
        "member_id",
        "application_token",
    }
    assert simulator.rest(portal, "user.admin", token=tokens.access_token).body["error"] == "invalid_token"
    assert simulator.refresh(tokens.refresh_token).body["error"] == "invalid_grant"


def test_control_api_refuses_bad_input(simulator: SimClient, portal: SimPortal) -> None:
    from b24pipe.sim.client import SimError

    with pytest.raises(SimError) as bad:
        simulator.create_portal(plan="platinum")
    assert bad.value.status == 400
    with pytest.raises(SimError) as dup:
        simulator.create_portal(member_id=portal.member_id)
    assert dup.value.status == 409
    with pytest.raises(SimError) as unknown:
        simulator.install("no-such-portal")
    assert unknown.value.status == 404
