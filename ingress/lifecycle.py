"""Installs, updates and the install page at the ingress: trust only what Bitrix24 vouches for.

ONAPPINSTALL, ONAPPUPDATE and the install page bring the tokens that every later check
relies on, so they cannot be checked against stored tokens; instead the authorization
server is asked (`shared.oauth.OAuthClient.verify`). Three outcomes:

- verified: the record is stored (endpoints, scope, version from the `app.info` answer;
  OAuth tokens sealed; the application token as a digest) and the event is queued;
- refuted: 401, nothing stored, a security-log line;
- unreachable: the install is stored as *pending*, its token accepted as "pending", the
  event itself held in that install's quarantine, and a worker job re-verifies with backoff
  (`workers.lifecycle.reverify_install`, scheduled through `shared.jobs`); 200, because Bitrix24 never re-sends. Each
  (member id, token) is its own pending install: a second install for the same member id
  (a forgery during the outage) never replaces the first nor touches its quarantine. The
  number of pending installs and the bytes they hold are capped (503 past the caps), so
  nobody without a verified install can fill Redis.

`Lifecycle` implements the ingress hook protocol (`on_install`, `on_update`,
`on_install_page`, `quarantine`); the ingress calls it and owns everything else.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from enum import Enum
from typing import Protocol

import aiohttp
import orjson
import redis.asyncio as aioredis
from aiohttp import web
from pydantic import ValidationError
from redis.exceptions import RedisError

from ingress import install_page
from ingress.delivery import Delivery, DeliveryAuth
from ingress.enqueuer import Unavailable
from ingress.hooks import INVALID_TOKEN, UNAVAILABLE, answer
from shared import portalstore as store
from shared.crypto import TokenCipher, digest
from shared.events import Event
from shared.jobs import LIFECYCLE_RETRY_BASE, queue_for, schedule_reverify
from shared.keys import Keys
from shared.logs import log, mask, security_event
from shared.oauth import OAuthClient, Refuted, Unreachable, Verified
from shared.outbound import Resolver, system_resolve
from shared.portals import Portal, Status, namespace_connector
from shared.redisconn import sync_redis
from shared.settings import Settings, require_token_keys

_logger = logging.getLogger("b24pipe.ingress.lifecycle")

ACCEPTED_BODY = b'{"status":"ok","message":"event accepted"}'


class Enqueuer(Protocol):
    """The ingress's batching enqueuer (`ingress.enqueuer.Enqueuer`): raises `Unavailable`."""

    async def enqueue(self, event: Event, queue: str) -> bool: ...


class InstallOutcome(Enum):
    STORED = "stored"  # verified and stored
    PENDING = "pending"  # stored as pending: the authorization server could not be reached
    REFUSED = "refused"  # not stored: forged, or not vouched for
    UNAVAILABLE = "unavailable"  # not stored: Redis failed


_RESPONSES = {
    InstallOutcome.STORED: (200, ACCEPTED_BODY),
    InstallOutcome.PENDING: (200, ACCEPTED_BODY),
    InstallOutcome.REFUSED: (401, INVALID_TOKEN),
    InstallOutcome.UNAVAILABLE: (503, UNAVAILABLE),
}


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)

_HELD_REASONS = {
    store.FULL: "quarantine full",
    store.ORPHAN: "no pending install waits for the token",
    store.OVER_BYTES: "quarantine byte cap reached",
}


def _tokens(auth: DeliveryAuth, now: int) -> store.Tokens:
    expires = auth.expires or (now + auth.expires_in if auth.expires_in else 0)
    return store.Tokens(
        access_token=auth.access_token or "",
        refresh_token=auth.refresh_token or "",
        expires=expires,
        application_token=auth.application_token or "",
    )


def page_delivery(form: dict[str, str], query: dict[str, str], now: int) -> Delivery:
    """The install page POST as an ONAPPINSTALL delivery (raises ValidationError if malformed).

    `SERVER_ENDPOINT` and every other endpoint in the request are ignored: the portal's
    endpoints come from the authorization server's answer."""
    expires_in = form.get("AUTH_EXPIRES") or None
    auth = DeliveryAuth(
        member_id=form.get("member_id", ""),
        application_token=form.get("APPLICATION_TOKEN") or None,
        access_token=form.get("AUTH_ID") or None,
        refresh_token=form.get("REFRESH_ID") or None,
        expires_in=expires_in,
        domain=query.get("DOMAIN") or None,
        status=form.get("status") or None,
    )
    return Delivery(event="ONAPPINSTALL", data={"SOURCE": "install_page"}, ts=now, auth=auth)


class Lifecycle:
    """The ingress's lifecycle hooks (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        redis_async: aioredis.Redis,
        enqueuer: Enqueuer,
        http_session: aiohttp.ClientSession,
        resolve: Resolver = system_resolve,
    ) -> None:
        self._settings = settings
        self._redis = redis_async
        self._enqueuer = enqueuer
        self._keys = Keys(settings.namespace)
        self._cipher = TokenCipher(require_token_keys(settings))
        self._oauth = OAuthClient(settings, http_session, resolve)
        self._bounds = store.Bounds.of(settings)

    # --- the hook protocol ---------------------------------------------------------------

    async def on_install(self, delivery: Delivery, remote: str) -> web.Response:
        outcome = await self._adopt(delivery, remote, version=None, grace=False)
        return answer(*_RESPONSES[outcome])

    async def on_update(self, delivery: Delivery, remote: str) -> web.Response:
        version = str(delivery.data.get("VERSION") or "")
        if not version:
            self._refused(delivery, remote, "update names no VERSION")
            return answer(*_RESPONSES[InstallOutcome.REFUSED])
        outcome = await self._adopt(delivery, remote, version=version, grace=True)
        return answer(*_RESPONSES[outcome])

    async def on_install_page(self, form: dict[str, str], query: dict[str, str], remote: str) -> web.Response:
        try:
            delivery = page_delivery(form, query, int(time.time()))
        except ValidationError:
            security_event("install_refused", source="install_page", remote=remote, reason="malformed")
            return install_page.refused(400, install_page.MALFORMED)
        outcome = await self._adopt(delivery, remote, version=None, grace=False)
        if outcome in (InstallOutcome.STORED, InstallOutcome.PENDING):
            return install_page.finished()
        if outcome is InstallOutcome.REFUSED:
            return install_page.refused(401, install_page.UNVERIFIED)
        return install_page.refused(503, install_page.TRY_AGAIN)

    async def quarantine(self, delivery: Delivery, remote: str) -> web.Response:
        """Hold an event whose token is a pending install's until that install is verified.
        503 (counted by the event path) when it cannot be held: nothing waits for the token
        any more, or a cap is reached; never a 200 for an event nothing could release."""
        member_id = delivery.auth.member_id
        token_digest = digest(delivery.auth.application_token or "")
        event = delivery.to_event()
        item = orjson.dumps(event.model_dump(mode="json"))
        plan = store.quarantine_push(self._keys, member_id, token_digest, item, self._bounds)
        held = await store.arun(self._redis, plan)  # Redis errors: the caller's 503, counted
        if held < 0:
            security_event(
                "quarantine_full" if held != store.ORPHAN else "quarantine_refused",
                member_id=member_id,
                remote=remote,
                event=delivery.event,
                reason=_HELD_REASONS[held],
            )
            return answer(*_RESPONSES[InstallOutcome.UNAVAILABLE])
        log(
            _logger,
            logging.INFO,
            "event quarantined",
            member_id=member_id,
            event=delivery.event,
            event_id=event.id,
        )
        return answer(*_RESPONSES[InstallOutcome.PENDING])

    # --- the shared flow -----------------------------------------------------------------

    async def _adopt(
        self, delivery: Delivery, remote: str, *, version: str | None, grace: bool
    ) -> InstallOutcome:
        auth = delivery.auth
        tokens = _tokens(auth, int(time.time()))
        if not tokens.access_token or not auth.domain:
            self._refused(delivery, remote, "no access token or domain")
            return InstallOutcome.REFUSED
        if not _HOSTNAME.fullmatch(auth.domain):
            # nothing to verify nor to keep pending: a portal's domain is a host name
            self._refused(delivery, remote, "domain is not a host name")
            return InstallOutcome.REFUSED
        if not tokens.application_token and delivery.data.get("SOURCE") != "install_page":
            self._refused(delivery, remote, "no application token")
            return InstallOutcome.REFUSED
        result = await self._oauth.verify(
            member_id=auth.member_id, domain=auth.domain, access_token=tokens.access_token, version=version
        )
        try:
            if isinstance(result, Verified):
                return await self._store_verified(delivery, remote, result, tokens, grace)
            if isinstance(result, Refuted):
                self._refused(delivery, remote, result.reason)
                return InstallOutcome.REFUSED
            return await self._store_pending(delivery, remote, result, tokens, version, grace)
        except (RedisError, Unavailable) as exc:
            log(
                _logger,
                logging.ERROR,
                "lifecycle store failed",
                member_id=auth.member_id,
                error=type(exc).__name__,
            )
            return InstallOutcome.UNAVAILABLE

    async def _store_verified(
        self, delivery: Delivery, remote: str, result: Verified, tokens: store.Tokens, grace: bool
    ) -> InstallOutcome:
        member_id = delivery.auth.member_id
        token_digest = digest(tokens.application_token) if tokens.application_token else ""
        (existing, pending) = await store.arun(
            self._redis,
            store.load_portal(self._keys, member_id)
            + store.load_pending(self._keys, member_id, token_digest),
        )
        connector = namespace_connector(self._settings)
        portal = store.verified_portal(
            existing, result.info, tokens, self._cipher, self._settings.oauth_url, connector
        )
        grace_until = (
            int(time.time()) + self._settings.token_grace if grace and self._settings.token_grace else 0
        )
        # pending installs that arrived before this one are older tokens: never adopted later
        changed, _ = await store.arun(
            self._redis,
            store.commit_verified(self._keys, portal, token_digest, grace_until, pending)
            + store.supersede_pending(self._keys, member_id, int(time.time()), token_digest),
        )
        security_event(
            "install_verified",
            member_id=member_id,
            domain=portal.domain,
            event=delivery.event,
            remote=remote,
            version=portal.app_version,
        )
        if changed:
            _token_changed(portal, existing, tokens.application_token, grace_until, remote)
        await self._enqueuer.enqueue(delivery.to_event(), self._keys.lifecycle_queue)
        if pending is not None:
            await self._release(member_id, token_digest)
        return InstallOutcome.STORED

    async def _release(self, member_id: str, token_digest: str) -> None:
        raw = await store.arun(self._redis, store.quarantine_read(self._keys, member_id, token_digest))
        for event in store.quarantined_events(raw):
            await self._enqueuer.enqueue(event, queue_for(self._keys, event))
        await store.arun(self._redis, store.quarantine_trim(self._keys, member_id, token_digest, len(raw)))

    async def _store_pending(
        self,
        delivery: Delivery,
        remote: str,
        result: Unreachable,
        tokens: store.Tokens,
        version: str | None,
        grace: bool,
    ) -> InstallOutcome:
        auth = delivery.auth
        member_id = auth.member_id
        if not tokens.application_token:
            # an install page without a token has nothing to hold events by: refuse for now
            self._refused(delivery, remote, f"unverifiable: {result.reason}")
            return InstallOutcome.REFUSED
        now = int(time.time())
        portal = Portal(
            member_id=member_id, domain=auth.domain or "", status=Status.PENDING, app_version=version or ""
        )
        portal.seal_tokens(self._cipher, tokens.access_token, tokens.refresh_token, tokens.expires)
        pending = store.PendingInstall(
            portal=portal,
            token_digest=digest(tokens.application_token),
            version=version,
            grace=grace,
            first_seen=now,
        )
        item = orjson.dumps(delivery.to_event().model_dump(mode="json"))
        stored, held = await store.arun(
            self._redis,
            store.save_pending(self._keys, pending, self._bounds)
            + store.quarantine_push(self._keys, member_id, pending.token_digest, item, self._bounds),
        )
        if stored == store.FULL:
            # too many installs wait already: nothing is stored, and the 503 is counted
            self._refused(delivery, remote, "too many pending installs")
            return InstallOutcome.UNAVAILABLE
        if stored == 1:
            await asyncio.to_thread(self._schedule, member_id, pending.token_digest)
        security_event(
            "install_pending",
            member_id=member_id,
            event=delivery.event,
            remote=remote,
            reason=result.reason,
            application_token=mask(tokens.application_token),
            already=stored == store.ALREADY_PENDING,
        )
        # the install is pending; its own event could not be held (a byte cap): say so
        return InstallOutcome.PENDING if held >= 0 else InstallOutcome.UNAVAILABLE

    def _schedule(self, member_id: str, token_digest: str) -> None:
        connection = sync_redis(self._settings)
        try:
            schedule_reverify(
                connection, self._keys, member_id, LIFECYCLE_RETRY_BASE, attempt=1, token_digest=token_digest
            )
        finally:
            connection.close()

    def _refused(self, delivery: Delivery, remote: str, reason: str) -> None:
        security_event(
            "install_refused",
            member_id=delivery.auth.member_id,
            domain=delivery.auth.domain or "",
            event=delivery.event,
            remote=remote,
            reason=reason,
        )


def _token_changed(
    portal: Portal, existing: Portal | None, application_token: str, grace_until: int, remote: str
) -> None:
    security_event(
        "token_changed",
        member_id=portal.member_id,
        application_token=mask(application_token),
        replaced=existing is not None,
        grace_until=grace_until,
        remote=remote,
    )
