"""The outbound host policy: only the OAuth server, verified portals and allowed hosts."""

from __future__ import annotations

import pytest

from shared.outbound import HostPolicy, OutboundRefused


def public(_host: str) -> list[str]:
    return ["93.184.216.34"]


def private(_host: str) -> list[str]:
    return ["10.0.0.5"]


POLICY = HostPolicy(oauth_host="oauth.bitrix.info", allowed=("*.example.org",), allow_http=False)


def test_oauth_and_portal_hosts_pass() -> None:
    assert POLICY.check_url("https://oauth.bitrix.info/oauth/token/", resolve=public)
    assert POLICY.check_url("https://acme.bitrix24.com/rest/x.json", ["acme.bitrix24.com"], resolve=public)
    assert POLICY.check_url("https://api.example.org/x", resolve=private)  # listed: private allowed


@pytest.mark.parametrize(
    ("url", "hosts", "resolver", "reason"),
    [
        ("https://evil.com/x", [], public, "not the authorization server"),
        ("http://oauth.bitrix.info/x", [], public, "http://"),
        ("ftp://oauth.bitrix.info/x", [], public, "scheme"),
        ("https://user:pw@oauth.bitrix.info/x", [], public, "credentials"),
        ("https://acme.bitrix24.com/x", ["acme.bitrix24.com"], private, "non-public"),
        ("https://acme.bitrix24.com/x", ["acme.bitrix24.com"], lambda h: ["127.0.0.1"], "non-public"),
        ("https:///x", [], public, "no host"),
    ],
)
def test_refused(url, hosts, resolver, reason) -> None:
    with pytest.raises(OutboundRefused, match=reason):
        POLICY.check_url(url, hosts, resolve=resolver)


def test_http_allowed_only_when_configured() -> None:
    local = HostPolicy(oauth_host="127.0.0.1", allowed=("127.0.0.1",), allow_http=True)
    assert local.check_url("http://127.0.0.1:8080/oauth/token/")
