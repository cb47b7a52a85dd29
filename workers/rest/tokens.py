"""OAuth tokens of a portal: read from the encrypted store, refreshed single-flight.

Bitrix24 refresh tokens work once: each refresh returns a new pair and kills the used one.
Two processes refreshing the same portal at once, or a process that refreshes and dies
before saving, lose the portal's authorization for good. Hence:

- one refresh per portal at a time across every process and host: a Redis lock whose lease
  outlives the HTTP timeout of the refresh request (`shared.portalstore.RefreshLock`, the
  same lock the uninstall confirmation takes);
- the grant itself is `shared.oauth.OAuthClient.refresh`, the only grant client (no
  redirect followed); missing client credentials raise `RestConfigurationError`, never retried;
- the new pair is saved with compare-and-set on the refresh token used
  (`shared.portalstore.save_refreshed`) before anyone uses it; waiters re-read the record
  and use the new pair;
- only `invalid_grant` marks the portal as needing re-authorization, and only if the stored
  refresh token is still the one that was refused (someone else may have saved a newer one);
- refresh near expiry or on `expired_token`, and a keep-alive refresh for portals idle long
  enough that their refresh token would expire (`workers.portals.keepalive`); never on a schedule;
- "near expiry" is in proportion to the token's lifetime (a fifth of it, at most 60 s): a
  margin as long as the lifetime itself would refresh on every call. With the single flight
  (a waiter takes the pair the lock holder saved), a portal is refreshed about once per
  lifetime whatever the number of processes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

import redis.asyncio as aioredis

from shared import portalstore as store
from shared.crypto import TokenCipher
from shared.keys import Keys
from shared.logs import log, security_event
from shared.oauth import DEFAULT_LIFETIME, OAuthClient, Refreshed, Refuted, Unconfigured
from shared.portals import Portal, Status
from shared.settings import Settings
from workers.errors import ApiError, AuthRevoked, ReauthRequired, RestConfigurationError
from workers.rest import metrics as restmetrics
from workers.rest.transport import host_of

_log = logging.getLogger("b24pipe.tokens")

REFRESH_MARGIN = 60  # refresh an access token at most this many seconds before it expires
MARGIN_SHARE = 0.2  # ...and at most this share of its lifetime before
_WAIT_STEP = 0.05
AUTH_SERVER_UNREACHABLE = "AUTH_SERVER_UNREACHABLE"  # timeout, 5xx or network: retried


def token_lifetime(portal: Portal) -> int:
    """How long the stored access token was issued for: `updated_at` is set when a pair is
    saved, so `expires - updated_at` is the `expires_in` it came with (an hour if unknown)."""
    lifetime = portal.expires - portal.updated_at
    return lifetime if portal.expires > 0 and lifetime > 0 else DEFAULT_LIFETIME


def refresh_margin(lifetime: float) -> float:
    """Seconds before expiry at which a token is refreshed: 60 s for hour-long tokens, a fifth
    of the lifetime for short ones (a 2 s token is refreshed once it is 1.6 s old)."""
    return min(float(REFRESH_MARGIN), max(0.0, lifetime) * MARGIN_SHARE)


def needs_refresh(portal: Portal, now: float, margin: float | None = None) -> bool:
    """The access token expires within the margin (its lifetime's by default; 0 = expiry
    unknown: wait for the 401)."""
    if margin is None:
        margin = refresh_margin(token_lifetime(portal))
    return bool(portal.refresh_token) and portal.expires > 0 and portal.expires - now <= margin


def lifetime_used(replaced: Portal, now: float) -> float:
    """The share of its lifetime a pair had lived when it was replaced: about 0.8 for a
    refresh the lifetime explains, far less for one caused by anything else."""
    return max(0.0, now - replaced.updated_at) / token_lifetime(replaced)


def keepalive_due(portal: Portal, now: float, after: float) -> bool:
    """An active OAuth portal whose tokens were last renewed `after` seconds ago or more.

    Any normal refresh renews `updated_at`, so only portals idle that long qualify."""
    return (
        portal.status is Status.ACTIVE
        and bool(portal.refresh_token)
        and not portal.webhook_url
        and now - portal.updated_at >= after
    )


class TokenStore:
    """The token side of one namespace, used by every client of this process."""

    def __init__(
        self, settings: Settings, redis: aioredis.Redis, cipher: TokenCipher, oauth: OAuthClient
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._keys = Keys(settings.namespace)
        self._cipher = cipher
        self._oauth = oauth
        self.lease = store.refresh_lease(settings)

    @property
    def cipher(self) -> TokenCipher:
        return self._cipher

    async def load(self, member_id: str) -> Portal:
        """The portal record; raises when it cannot be called at all."""
        # on every call's path: one HGETALL, not a store transaction around it
        raw = cast("dict[bytes, bytes]", await self._redis.hgetall(self._keys.portal(member_id)))
        if not raw:
            raise AuthRevoked("PORTAL_UNKNOWN", f"no portal record for {member_id}")
        portal = Portal.from_hash(raw)
        if portal.status is Status.REAUTH:
            raise ReauthRequired("invalid_grant", "portal needs re-authorization")
        if portal.status is Status.REVOKED:
            raise AuthRevoked("PORTAL_REVOKED", "portal revoked")
        return portal

    async def update_fields(self, member_id: str, fields: dict[str, str]) -> None:
        """Change non-token fields of the record (e.g. a moved endpoint); caches see the bump."""
        await store.arun(self._redis, store.update_fields(self._keys, member_id, fields))

    async def unindex(self, member_id: str) -> None:
        """Leave the keep-alive index (a portal that cannot be refreshed until a new token)."""
        await store.arun(self._redis, store.unindex(self._keys, member_id))

    async def fresh(self, member_id: str) -> Portal:
        """The record with an access token that is not about to expire (refreshing if needed)."""
        portal = await self.load(member_id)
        if needs_refresh(portal, time.time()):
            portal = await self.refresh(portal)
        return portal

    async def refresh(self, used: Portal) -> Portal:
        """Make sure the pair `used` is replaced, single-flight; return the record to use.

        If another process already replaced it, nothing is refreshed: its pair is returned."""
        lock = store.RefreshLock.of(self._keys, used.member_id, self.lease)
        deadline = time.monotonic() + self.lease * 2 + self._settings.http_timeout
        while True:
            current = await self.load(used.member_id)
            if current.refresh_token != used.refresh_token:
                return current
            if await store.arun(self._redis, store.take_lock(lock)):
                try:
                    return await self._refresh_locked(used)
                finally:
                    await store.arun(self._redis, store.release_lock(lock))
            if time.monotonic() > deadline:
                raise ApiError("REFRESH_TIMEOUT", "another process holds the refresh lock")
            # Someone else is refreshing: wait for their pair (a refresh is rare and short).
            await asyncio.sleep(_WAIT_STEP)

    async def _refresh_locked(self, used: Portal) -> Portal:
        member_id = used.member_id
        portal = await self.load(member_id)  # re-read under the lock: the truth now
        if portal.refresh_token != used.refresh_token:
            return portal  # refreshed by someone between our check and our lock
        if not portal.refresh_token:
            raise AuthRevoked("NO_REFRESH_TOKEN", "portal has no refresh token")
        result = await self._oauth.refresh(portal.open_refresh(self._cipher))
        if isinstance(result, Refreshed):
            return await self._save(portal, result)
        if isinstance(result, Refuted) and result.reason == "invalid_grant":
            return await self._mark_reauth(portal)
        if isinstance(result, Unconfigured):
            raise RestConfigurationError(
                result.reason, code=result.code
            )  # nothing was asked: no refresh failed
        restmetrics.REFRESHES.labels(outcome="error").inc()
        code = result.reason if isinstance(result, Refuted) else AUTH_SERVER_UNREACHABLE
        security_event("refresh_failed", member_id=member_id, code=code, marked=False)
        raise ApiError(code, "token refresh failed")

    async def _save(self, portal: Portal, refreshed: Refreshed) -> Portal:
        gen = await store.arun(self._redis, store.save_refreshed(self._keys, portal, refreshed, self._cipher))
        if gen == store.NOT_SAVED:
            # Cannot happen while we hold the lock, unless the lease ran out: the record moved on.
            restmetrics.REFRESHES.labels(outcome="lost_race").inc()
            security_event("refresh_failed", member_id=portal.member_id, code="cas_conflict", marked=False)
            return await self.load(portal.member_id)
        now = refreshed.issued_at
        restmetrics.REFRESHES.labels(outcome="ok").inc()
        restmetrics.REFRESH_LIFETIME_USED.observe(lifetime_used(portal, now))
        restmetrics.REFRESH_INTERVAL.observe(max(0, now - portal.updated_at))
        log(_log, logging.INFO, "token refreshed", member_id=portal.member_id, token_gen=gen)
        return await self.load(portal.member_id)

    async def _mark_reauth(self, portal: Portal) -> Portal:
        """invalid_grant: our refresh token is dead. Mark the portal, unless a newer pair was
        saved meanwhile (then that pair is the answer, not a re-authorization)."""
        reason = "refresh token refused (invalid_grant): reinstall, update or portals add"
        gen = await store.arun(self._redis, store.mark_reauth(self._keys, portal, reason))
        if gen == store.NOT_SAVED:
            return await self.load(portal.member_id)
        restmetrics.REFRESHES.labels(outcome="invalid_grant").inc()
        restmetrics.REAUTH.inc()
        security_event("refresh_failed", member_id=portal.member_id, code="invalid_grant", marked=True)
        raise ReauthRequired("invalid_grant", "portal needs re-authorization")


def portal_hosts(portal: Portal) -> tuple[str, ...]:
    """The hosts a portal's calls may go to: its verified domain and its REST endpoint's host."""
    hosts = {portal.domain.lower().split(":")[0]} if portal.domain else set()
    if portal.client_endpoint:
        hosts.add(host_of(portal.client_endpoint))
    return tuple(sorted(h for h in hosts if h))
