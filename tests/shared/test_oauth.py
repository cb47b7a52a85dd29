"""The only OAuth client (`shared.oauth`). The pure verdicts on app.info answers: whatever
the answer holds, only an exact match on client_id, member_id, domain, installed (and
version for updates) is trusted. The refresh grant: its answer parsed into one expiry (by
our clock), no redirect taken for an answer, and settings that cannot ask for it told apart."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.oauth import (
    DEFAULT_LIFETIME,
    AppInfo,
    OAuthClient,
    Refreshed,
    Refuted,
    Unconfigured,
    judge,
    parse_app_info,
    parse_refresh,
)
from shared.settings import Settings, load_settings
from tests.support.propcoverage import branch, reaches

GOOD: dict[str, Any] = {
    "result": {
        "client_id": "app.test.client",
        "scope": "crm",
        "user_id": 1,
        "install": {
            "installed": True,
            "version": 3,
            "domain": "A.example.com",
            "member_id": "m1",
            "client_endpoint": "https://a.example.com/rest/",
        },
    }
}


def verdict(body: object, version: str | None = None) -> Refuted | None:
    info = parse_app_info(body)
    if isinstance(info, Refuted):
        return info
    return judge(info, client_id="app.test.client", member_id="m1", domain="a.example.com", version=version)


def test_exact_answer_is_trusted_and_version_checked() -> None:
    assert verdict(GOOD) is None
    assert verdict(GOOD, version="3") is None
    assert verdict(GOOD, version="4") == Refuted("app.info names another version")


def test_error_answers_carry_only_the_code() -> None:
    assert parse_app_info({"error": "invalid_token", "error_description": "secret-ish"}) == Refuted(
        "invalid_token"
    )
    assert parse_app_info({"error": "x" * 500}) == Refuted("unexpected answer")
    assert parse_app_info("<html>") == Refuted("malformed app.info")


@reaches(accepted=0.05, refused=0.3)
@given(
    field=st.sampled_from(["client_id", "member_id", "domain", "installed", "client_endpoint"]),
    value=st.one_of(st.text(max_size=40), st.booleans(), st.none(), st.integers()),
)
def test_any_mismatch_is_refused(field: str, value: object) -> None:
    install: dict[str, Any] = dict(GOOD["result"]["install"])
    result: dict[str, Any] = {**GOOD["result"], "install": install}
    body = {"result": result}
    target = result if field == "client_id" else install
    target[field] = value
    info = parse_app_info(body)
    same = (
        (field == "client_id" and value == "app.test.client")
        or (field == "member_id" and value == "m1")
        or (
            field == "domain"
            and isinstance(value, str)
            and value.strip().lower().rstrip(".") == "a.example.com"
        )
        or (field == "installed" and value in (True, 1))
        or (field == "installed" and isinstance(value, str) and value.strip().upper() in ("1", "Y", "TRUE"))
        or (field == "client_endpoint" and value not in ("", None))
    )
    outcome = info if isinstance(info, Refuted) else verdict(body)
    assert (outcome is None) == same
    branch("accepted" if same else "refused")


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    )
)
def test_arbitrary_answers_never_crash_and_never_pass(body: object) -> None:
    result = parse_app_info(body)
    assert isinstance(result, (AppInfo, Refuted))
    if isinstance(result, AppInfo):
        assert verdict(body) is not None or (
            result.client_id == "app.test.client" and result.member_id == "m1"
        )


# --- the refresh grant ---------------------------------------------------------------------

PAIR = {"access_token": "a-1", "refresh_token": "r-1", "expires_in": 1800, "expires": 42}


def test_expiry_is_our_clock_plus_expires_in() -> None:
    answer = parse_refresh(200, {**PAIR, "member_id": "m1", "user_id": "7", "client_endpoint": "e"}, 1000)
    assert answer == Refreshed("a-1", "r-1", 1000, 2800, "m1", "e", 7)  # never Bitrix24's `expires`
    assert parse_refresh(200, {**PAIR, "expires_in": None}, 1000) == Refreshed(
        "a-1", "r-1", 1000, 1000 + DEFAULT_LIFETIME
    )


def test_anything_but_a_whole_pair_is_refused_with_a_loggable_reason() -> None:
    assert parse_refresh(200, {**PAIR, "refresh_token": ""}, 0) == Refuted("HTTP_200")
    assert parse_refresh(302, None, 0) == Refuted("HTTP_302")  # a redirect is an answer, not a hop
    assert parse_refresh(400, {"error": "invalid_grant"}, 0) == Refuted("invalid_grant")
    assert parse_refresh(401, {"error": "x y secret"}, 0) == Refuted("unexpected answer")
    assert parse_refresh(200, ["a-1"], 0) == Refuted("HTTP_200")


def _refresh() -> object:
    async def ask() -> object:
        async with aiohttp.ClientSession() as session:
            return await OAuthClient(load_settings(), session).refresh("r-1")

    return asyncio.run(ask())


@pytest.mark.parametrize("missing", ["B24_CLIENT_ID", "B24_CLIENT_SECRET"])
def test_missing_credentials_are_a_configuration_problem(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.setenv(missing, "")
    assert _refresh() == Unconfigured("NO_CLIENT_CREDENTIALS", "B24_CLIENT_ID/B24_CLIENT_SECRET are not set")


def test_an_authorization_server_the_policy_refuses_is_a_configuration_problem(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("B24_OAUTH_URL", "http://10.9.8.7")  # private, and not an allowed host
    refused = _refresh()
    assert isinstance(refused, Unconfigured) and refused.code == "OUTBOUND_REFUSED"
