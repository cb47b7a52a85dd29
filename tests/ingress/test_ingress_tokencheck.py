"""The pure token decision, and the cache's reads against a stalled Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from b24pipe.testing.ingress import seed_portal
from ingress.tokencheck import PortalTokens, Reason, TokenCache, Verdict, decide, portal_tokens
from shared.crypto import digest
from shared.keys import Keys
from shared.portals import AcceptedToken
from tests.conftest import PrivateRedis

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


def test_a_read_gives_up_at_the_callers_deadline_and_not_for_the_others(
    private_redis: PrivateRedis, keys: Keys
) -> None:
    """Redis stalled (SIGSTOP), socket timeout far away: the first caller gets TimeoutError
    at its own deadline, while the read it started carries on for a patient caller, who
    gets the answer once Redis is back."""
    seed_portal(private_redis.client(), keys, "m1", "t1")

    async def scenario() -> Verdict:
        client = aioredis.Redis(host="127.0.0.1", port=private_redis.port, socket_timeout=60)
        cache = TokenCache(client, keys)
        await cache.start()
        loop = asyncio.get_running_loop()
        private_redis.pause()
        try:
            impatient = asyncio.create_task(cache.check("m1", "t1", loop.time() + 0.3))
            await asyncio.sleep(0)  # the impatient caller starts the read
            patient = asyncio.create_task(cache.check("m1", "t1", loop.time() + 60))
            async with asyncio.timeout(20):  # generous: far below the socket timeout
                with pytest.raises(TimeoutError):
                    await impatient
            assert not patient.done()
        finally:
            private_redis.resume()
        async with asyncio.timeout(20):
            decision = await patient
        await cache.stop()
        await client.aclose()
        return decision.verdict

    assert asyncio.run(scenario()) is Verdict.ACCEPT
