"""Worker-side lifecycle jobs: finishing pending installs and confirming uninstalls.

Both are plain functions RQ runs from the lifecycle queue:

- `reverify_install(member_id, attempt)`: an install (or update) that arrived while the
  authorization server could not be reached is verified again, with exponential backoff.
  Verified: the record is stored exactly as the ingress would have, and the events held in
  its quarantine are queued. Refuted, or still unverifiable when the quarantine would have
  expired: the pending install, its token and its quarantine are dropped. Each (member
  id, token) pending is its own job: refuting a forged install drops only what came with
  the forged token. One that a newer verified install superseded releases its events but
  leaves the newer token in place.
- `confirm_uninstall(event_dict, attempt)`: ONAPPUNINSTALL carries no OAuth token, only the
  application token, so on its own it proves little. It is acted on only once Bitrix24
  confirms it: the stored tokens of an active portal no longer work (app.info or the
  refresh refused). Then the OAuth tokens are dropped and the portal revoked (events get
  401), and with `data[CLEAN]=1` its data is deleted. Otherwise nothing changes and the
  security log says so. A portal needing re-authorization has a dead pair anyway, so for
  it nothing can confirm the uninstall: it is recorded as unconfirmed (reason, the
  `b24pipe_portals_uninstall_unconfirmed` gauge, security log) and its data kept until a
  confirmation, a new working token, or an operator's `portals purge`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

import aiohttp
import redis
from rq import Queue

from shared import portalstore as store
from shared.backoff import backoff
from shared.crypto import DecryptError, TokenCipher
from shared.events import Event
from shared.jobs import (
    CONFIRM_UNINSTALL,
    LIFECYCLE_RETRY_BASE,
    enqueue_event,
    queue_for,
    schedule_reverify,
)
from shared.keys import Keys
from shared.logs import log, security_event
from shared.oauth import OAuthClient, Refreshed, Refuted, Unreachable, Verification, Verified
from shared.portals import Status, namespace_connector
from shared.redisconn import sync_redis
from shared.settings import Settings, load_settings, require_token_keys

_logger = logging.getLogger("b24pipe.lifecycle")

# A portal waiting for re-authorization: its stored pair fails whether or not the app is
# still installed, so that failure confirms nothing.
NEEDS_REAUTH = "the portal needs re-authorization: its stored pair proves nothing"


def next_delay(attempt: int, first_seen: float, now: float, settings: Settings) -> float | None:
    """Seconds until attempt `attempt + 1`, or None when it would come after the pending
    install's quarantine expired (then waiting longer helps nobody: give up)."""
    delay = backoff(attempt + 1, LIFECYCLE_RETRY_BASE, settings.retry_max)
    if now + delay - first_seen > settings.quarantine_ttl:
        return None
    return delay


def _context() -> tuple[Settings, Keys, redis.Redis, TokenCipher]:
    settings = load_settings()
    return settings, Keys(settings.namespace), sync_redis(settings), TokenCipher(require_token_keys(settings))


# --- pending installs ------------------------------------------------------------------------


def reverify_install(member_id: str, attempt: int = 1, token_digest: str = "") -> str:
    """Verify the pending install of (member id, token digest) again (see the module
    docstring); other pending installs of the member id have jobs of their own."""
    settings, keys, connection, cipher = _context()
    try:
        if not token_digest:  # a job scheduled by an older b24pipe, for its pending install
            token_digest = store.adopt_legacy_pending(connection, keys, member_id, store.Bounds.of(settings))
        pending = store.run(connection, store.load_pending(keys, member_id, token_digest))
        if pending is None:
            return "no pending install"
        store.run(connection, store.count_attempt(keys, member_id, token_digest))
        try:
            access = pending.portal.open_access(cipher)
        except DecryptError:
            return _give_up(connection, keys, pending, "pending tokens cannot be decrypted")
        result = asyncio.run(_verify(settings, pending, access))
        if isinstance(result, Verified):
            return _adopt(connection, keys, settings, cipher, pending, result)
        if isinstance(result, Refuted):
            return _give_up(connection, keys, pending, result.reason)
        delay = next_delay(attempt, pending.first_seen, time.time(), settings)
        if delay is None:
            return _give_up(connection, keys, pending, f"still unverifiable: {result.reason}")
        schedule_reverify(connection, keys, member_id, delay, attempt + 1, token_digest)
        log(_logger, logging.WARNING, "install still unverifiable", member_id=member_id, retry_in=delay)
        return f"unreachable, retry in {delay:g}s"
    finally:
        connection.close()


async def _verify(settings: Settings, pending: store.PendingInstall, access: str) -> Verification:
    async with aiohttp.ClientSession() as session:
        return await OAuthClient(settings, session).verify(
            member_id=pending.portal.member_id,
            domain=pending.portal.domain,
            access_token=access,
            version=pending.version,
        )


def _adopt(
    connection: redis.Redis,
    keys: Keys,
    settings: Settings,
    cipher: TokenCipher,
    pending: store.PendingInstall,
    result: Verified,
) -> str:
    member_id = pending.portal.member_id
    if pending.superseded:
        # genuine, but a newer install was verified meanwhile: its events run, its older
        # token does not replace the newer one
        store.run(connection, store.drop_pending(keys, member_id, pending.token_digest, quarantine=False))
        security_event("install_verified", member_id=member_id, after_pending=True, superseded=True)
        return _release_held(connection, keys, settings, pending, "verified but superseded")
    tokens = store.Tokens(
        access_token=pending.portal.open_access(cipher),
        refresh_token=pending.portal.open_refresh(cipher),
        expires=pending.portal.expires,
    )
    existing = store.run(connection, store.load_portal(keys, member_id))
    connector = namespace_connector(settings)
    portal = store.verified_portal(existing, result.info, tokens, cipher, settings.oauth_url, connector)
    grace_until = int(time.time()) + settings.token_grace if pending.grace and settings.token_grace else 0
    changed, _ = store.run(
        connection,
        store.commit_verified(keys, portal, pending.token_digest, grace_until, pending)
        + store.supersede_pending(keys, member_id, pending.first_seen, pending.token_digest),
    )
    security_event("install_verified", member_id=member_id, domain=portal.domain, after_pending=True)
    if changed:
        security_event(
            "token_changed", member_id=member_id, replaced=existing is not None, grace_until=grace_until
        )
    return _release_held(connection, keys, settings, pending, "verified")


def _release_held(
    connection: redis.Redis, keys: Keys, settings: Settings, pending: store.PendingInstall, what: str
) -> str:
    member_id = pending.portal.member_id
    raw = store.run(connection, store.quarantine_read(keys, member_id, pending.token_digest))
    events = store.quarantined_events(raw)
    for event in events:
        enqueue_event(connection, keys, settings, event, queue_for(keys, event))
    store.run(connection, store.quarantine_trim(keys, member_id, pending.token_digest, len(raw)))
    return f"{what}, {len(events)} held events released"


def _give_up(connection: redis.Redis, keys: Keys, pending: store.PendingInstall, reason: str) -> str:
    member_id = pending.portal.member_id
    store.run(connection, store.drop_pending(keys, member_id, pending.token_digest, quarantine=True))
    security_event(
        "install_refused",
        member_id=member_id,
        domain=pending.portal.domain,
        reason=reason,
        after_pending=True,
    )
    return f"refused: {reason}"


# --- uninstall -------------------------------------------------------------------------------


def _cleaned(data: dict[str, Any]) -> bool:
    return str(data.get("CLEAN", "0")).strip().upper() in ("1", "Y", "TRUE")


def confirm_uninstall(event_dict: dict[str, Any], attempt: int = 1) -> str:
    """Act on an ONAPPUNINSTALL only once Bitrix24 confirms it (see the module docstring)."""
    event = Event.model_validate(event_dict)
    member_id = event.member_id
    settings, keys, connection, cipher = _context()
    try:
        portal = store.run(connection, store.load_portal(keys, member_id))
        if portal is None or portal.status is Status.REVOKED:
            return "unknown or already revoked portal"
        # the token refresh's own lock: the check may use up the refresh token (app.info, then
        # a refresh: two requests under it)
        lock = store.RefreshLock.of(keys, member_id, store.refresh_lease(settings, requests=2))
        if not store.run(connection, store.take_lock(lock)):
            return _retry_confirm(
                connection, keys, settings, event_dict, attempt, "token refresh in progress"
            )
        try:
            result = _check_tokens(connection, keys, settings, cipher, member_id)
        finally:
            store.run(connection, store.release_lock(lock))
        if result == NEEDS_REAUTH:
            store.run(connection, store.mark_uninstall_unconfirmed(keys, member_id, result))
            security_event("uninstall_unconfirmed", member_id=member_id, reason=result, kept=True)
            return f"unconfirmed, kept: {result}"
        if result is True:
            clean = _cleaned(event.data)
            store.run(connection, store.revoke(keys, member_id, "uninstall confirmed by Bitrix24"))
            if clean:
                store.purge_sync(connection, keys, member_id)
            security_event("revoked", member_id=member_id, reason="uninstall confirmed", clean=clean)
            return "uninstalled, data deleted" if clean else "uninstalled"
        if isinstance(result, Unreachable):
            return _retry_confirm(connection, keys, settings, event_dict, attempt, result.reason)
        security_event("uninstall_unconfirmed", member_id=member_id, reason=result)
        return f"unconfirmed: {result}"
    finally:
        connection.close()


def _check_tokens(
    connection: redis.Redis, keys: Keys, settings: Settings, cipher: TokenCipher, member_id: str
) -> bool | str | Unreachable:
    """True when Bitrix24 confirms the tokens are dead; a reason text when it does not."""
    portal = store.run(connection, store.load_portal(keys, member_id))  # re-read under the lock
    if portal is None or portal.status is Status.REVOKED:
        return "portal gone meanwhile"
    if portal.status is Status.REAUTH:
        return NEEDS_REAUTH
    try:
        access, refresh = portal.open_access(cipher), portal.open_refresh(cipher)
    except DecryptError:
        return "stored tokens cannot be decrypted"
    if not access and not refresh:
        return "no stored OAuth token to ask Bitrix24 with"
    result = asyncio.run(_ask(settings, access, refresh))
    if isinstance(result, Refreshed):
        # the used refresh token is dead now: the new pair is stored at once, as any refresh's
        store.run(connection, store.save_refreshed(keys, portal, result, cipher))
        return "tokens still work (refreshed)"
    if result is False:
        return "tokens still work"
    return result


async def _ask(settings: Settings, access: str, refresh: str) -> bool | Refreshed | Unreachable:
    async with aiohttp.ClientSession() as session:
        return await OAuthClient(settings, session).uninstall_confirmed(access, refresh)


def _retry_confirm(
    connection: redis.Redis,
    keys: Keys,
    settings: Settings,
    event_dict: dict[str, Any],
    attempt: int,
    why: str,
) -> str:
    member_id = str(event_dict.get("member_id", ""))
    if attempt >= settings.max_attempts:
        security_event("uninstall_unconfirmed", member_id=member_id, reason=f"gave up: {why}")
        return f"unconfirmed: gave up ({why})"
    delay = backoff(attempt + 1, LIFECYCLE_RETRY_BASE, settings.retry_max)
    Queue(keys.lifecycle_queue, connection=connection).enqueue_in(
        timedelta(seconds=delay),
        CONFIRM_UNINSTALL,
        event_dict,
        attempt + 1,
        description=f"confirm_uninstall({member_id})",
    )
    return f"cannot tell yet ({why}), retry in {delay:g}s"
