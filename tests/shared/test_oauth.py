"""The refresh grant of the only OAuth client: its answer parsed into one expiry (by our
clock), no redirect taken for an answer, and settings that cannot ask for it told apart."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from shared.oauth import DEFAULT_LIFETIME, OAuthClient, Refreshed, Refuted, Unconfigured, parse_refresh
from shared.settings import Settings, load_settings

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
