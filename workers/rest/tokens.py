"""OAuth tokens of a portal: read from the encrypted store, refreshed single-flight.

Bitrix24 refresh tokens work once: each refresh returns a new pair and kills the used one.
Two processes refreshing the same portal at once, or a process that refreshes and dies
before saving, lose the portal's authorization for good. Hence:

- one refresh per portal at a time across every process and host: a Redis lock whose lease
  outlives the HTTP timeout of the refresh request;
- the new pair is saved with compare-and-set on the refresh token used (lua/token_cas.lua)
  before anyone uses it; waiters re-read the record and use the new pair;
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
import secrets
import time
from dataclasses import replace
from typing import cast

import redis.asyncio as aioredis

from shared import lua
from shared.crypto import TokenCipher
from shared.keys import Keys
from shared.logs import log, security_event
from shared.portals import Portal, Status
from shared.settings import Settings
from workers.errors import ApiError, AuthRevoked, ReauthRequired
from workers.rest import metrics as restmetrics
from workers.rest.transport import Transport, host_of

_log = logging.getLogger("b24pipe.tokens")

REFRESH_MARGIN = 60  # refresh an access token at most this many seconds before it expires
MARGIN_SHARE = 0.2  # ...and at most this share of its lifetime before
DEFAULT_LIFETIME = 3600  # Bitrix24's access tokens live an hour
_WAIT_STEP = 0.05


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
        self, settings: Settings, redis: aioredis.Redis, cipher: TokenCipher, transport: Transport
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._keys = Keys(settings.namespace)
        self._cipher = cipher
        self._transport = transport
        self._cas = lua.script(redis, "workers/lua/token_cas.lua")
        self._release = lua.script(redis, "workers/lua/lock_release.lua")
        # The lease outlives the refresh request (and its connection setup) with room to save.
        self.lease = settings.http_timeout * 2 + 5

    @property
    def cipher(self) -> TokenCipher:
        return self._cipher

    async def load(self, member_id: str) -> Portal:
        """The portal record; raises when it cannot be called at all."""
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
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.portal(member_id), mapping=fields)  # type: ignore[arg-type]
            pipe.incr(self._keys.portals_version)
            await pipe.execute()

    async def _compare_and_set(self, portal: Portal, fields: dict[str, str], issued_at: int | None) -> int:
        """token_cas.lua: write `fields` unless the stored refresh token is no longer the one
        `portal` holds. `issued_at`: a new pair issued then (token_gen bumped, keep-alive
        index moved); None: a status change. The token_gen stored, or -1 (nothing written)."""
        keys = self._keys
        member_id = portal.member_id
        gen = await self._cas(
            keys=[keys.portal(member_id), keys.portals_version, keys.token_issued, keys.reauth_portals],
            args=[
                portal.refresh_token,
                "0" if issued_at is None else "1",
                member_id,
                issued_at or 0,
                *[x for pair in fields.items() for x in pair],
            ],
        )
        return int(gen)

    async def unindex(self, member_id: str) -> None:
        """Leave the keep-alive index (a portal that cannot be refreshed until a new token)."""
        await self._redis.zrem(self._keys.token_issued, member_id)

    async def fresh(self, member_id: str) -> Portal:
        """The record with an access token that is not about to expire (refreshing if needed)."""
        portal = await self.load(member_id)
        if needs_refresh(portal, time.time()):
            portal = await self.refresh(portal)
        return portal

    async def refresh(self, used: Portal) -> Portal:
        """Make sure the pair `used` is replaced, single-flight; return the record to use.

        If another process already replaced it, nothing is refreshed: its pair is returned."""
        lock = self._keys.refresh_lock(used.member_id)
        holder = secrets.token_hex(16)
        deadline = time.monotonic() + self.lease * 2 + self._settings.http_timeout
        while True:
            current = await self.load(used.member_id)
            if current.refresh_token != used.refresh_token:
                return current
            if await self._redis.set(lock, holder, nx=True, px=int(self.lease * 1000)):
                try:
                    return await self._refresh_locked(used)
                finally:
                    await self._release(keys=[lock], args=[holder])
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
        secret = self._settings.secret()
        if not self._settings.client_id or not secret:
            raise ApiError("NO_CLIENT_CREDENTIALS", "B24_CLIENT_ID/B24_CLIENT_SECRET are not set")
        form = {
            "grant_type": "refresh_token",
            "client_id": self._settings.client_id,
            "client_secret": secret,
            "refresh_token": portal.open_refresh(self._cipher),
        }
        answer = await self._transport.post(f"{self._settings.oauth_url}/oauth/token/", form=form)
        payload = answer.payload or {}
        if answer.status == 200 and payload.get("access_token") and payload.get("refresh_token"):
            return await self._save(portal, payload)
        code = str(payload.get("error") or f"HTTP_{answer.status}")
        if code == "invalid_grant":
            return await self._mark_reauth(portal)
        restmetrics.REFRESHES.labels(outcome="error").inc()
        security_event("refresh_failed", member_id=member_id, code=code, marked=False)
        raise ApiError(code, "token refresh failed", status=answer.status)

    async def _save(self, portal: Portal, payload: dict[str, object]) -> Portal:
        now = int(time.time())
        expires_in = int(str(payload.get("expires_in") or 3600))
        fresh = replace(portal)
        fresh.seal_tokens(
            self._cipher, str(payload["access_token"]), str(payload["refresh_token"]), now + expires_in
        )
        fields = {
            "access_token": fresh.access_token,
            "refresh_token": fresh.refresh_token,
            "expires": str(fresh.expires),
            "updated_at": str(now),
        }
        endpoint = str(payload.get("client_endpoint") or "")
        same_portal = str(payload.get("member_id") or portal.member_id) == portal.member_id
        if endpoint and same_portal:
            fields["client_endpoint"] = endpoint
        user = str(payload.get("user_id") or "")
        if same_portal and user.isdigit() and int(user) > 0:
            # whom the app writes as: echo marks are keyed by it (a portal added by hand
            # learns it here, at its first refresh)
            fields["user_id"] = str(int(user))
        gen = await self._compare_and_set(portal, fields, issued_at=now)
        if gen < 0:
            # Cannot happen while we hold the lock, unless the lease ran out: the record moved on.
            restmetrics.REFRESHES.labels(outcome="lost_race").inc()
            security_event("refresh_failed", member_id=portal.member_id, code="cas_conflict", marked=False)
            return await self.load(portal.member_id)
        restmetrics.REFRESHES.labels(outcome="ok").inc()
        restmetrics.REFRESH_LIFETIME_USED.observe(lifetime_used(portal, now))
        restmetrics.REFRESH_INTERVAL.observe(max(0, now - portal.updated_at))
        log(_log, logging.INFO, "token refreshed", member_id=portal.member_id, token_gen=gen)
        return await self.load(portal.member_id)

    async def _mark_reauth(self, portal: Portal) -> Portal:
        """invalid_grant: our refresh token is dead. Mark the portal, unless a newer pair was
        saved meanwhile (then that pair is the answer, not a re-authorization)."""
        fields = {
            "status": str(Status.REAUTH),
            "reason": "refresh token refused (invalid_grant): reinstall, update or portals add",
            "updated_at": str(int(time.time())),
        }
        gen = await self._compare_and_set(portal, fields, issued_at=None)
        if gen < 0:
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
