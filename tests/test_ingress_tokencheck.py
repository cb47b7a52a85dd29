"""The pure token decision."""

from __future__ import annotations

import pytest

from ingress.tokencheck import PortalTokens, Reason, Verdict, decide, portal_tokens
from shared.crypto import digest
from shared.portals import AcceptedToken

NOW = 1_800_000_000.0


def _portal(status: str = "active", **tokens: AcceptedToken) -> PortalTokens:
    return PortalTokens(status, {digest(token): kind for token, kind in tokens.items()})


@pytest.mark.parametrize(
    ("token", "portal", "verdict", "reason"),
    [
        ("app1", _portal(app1=AcceptedToken("app")), Verdict.ACCEPT, None),
        ("hook1", _portal(app1=AcceptedToken("app"), hook1=AcceptedToken("webhook")), Verdict.ACCEPT, None),
        ("old", _portal(old=AcceptedToken("grace", int(NOW) + 10)), Verdict.ACCEPT, None),
        ("old", _portal(old=AcceptedToken("grace", int(NOW) - 10)), Verdict.REJECT, Reason.EXPIRED),
        ("new", _portal("pending", new=AcceptedToken("pending")), Verdict.QUARANTINE, None),
        ("app1", _portal("reauth", app1=AcceptedToken("app")), Verdict.ACCEPT, None),
        ("app1", _portal("revoked", app1=AcceptedToken("app")), Verdict.REJECT, Reason.REVOKED),
        ("other", _portal(app1=AcceptedToken("app")), Verdict.REJECT, Reason.MISMATCH),
        (None, _portal(app1=AcceptedToken("app")), Verdict.REJECT, Reason.MISSING),
        ("", _portal(app1=AcceptedToken("app")), Verdict.REJECT, Reason.MISSING),
        ("app1", PortalTokens(), Verdict.REJECT, Reason.UNKNOWN_PORTAL),
    ],
)
def test_decide(token: str | None, portal: PortalTokens, verdict: Verdict, reason: Reason | None) -> None:
    decision = decide(token, portal, NOW)
    assert decision.verdict is verdict
    assert decision.reason == reason


def test_portal_tokens_skips_unreadable_entries() -> None:
    view = portal_tokens(b"active", {b"d1": AcceptedToken("app").encode(), b"d2": b"not json"})
    assert view.status == "active"
    assert set(view.tokens) == {"d1"}
