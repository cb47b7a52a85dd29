"""The application-token check: a pure decision, fed by a per-process cache.

Every event carries `auth[application_token]`; Bitrix24 vouches for nothing else. The
accepted tokens of a portal are stored as digests (`Keys.app_tokens`): the app's, one per
outgoing webhook, the previous one during its grace period, and a pending install's. A
portal's `status` (`Keys.portal`) says whether it is revoked.

Reading that from Redis on every event would double the ingress's Redis traffic, so each
process caches it per member_id and drops the whole cache whenever
`Keys.portals_version` changes; the version is polled every 250 ms, so a revocation (whose
writer bumps the version) reaches every process within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ingress.tasks import stop_tasks
from shared.crypto import digest, same_digest
from shared.keys import Keys
from shared.logs import log
from shared.portals import AcceptedToken, Status

_logger = logging.getLogger("b24pipe.ingress.tokens")

POLL_INTERVAL = 0.25
STOP_WAIT = 5.0  # seconds shutdown waits for the poller and reads in flight
MAX_CACHED = 100_000  # member ids; a flood of unknown ids cannot grow memory past this


class Verdict(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    QUARANTINE = "quarantine"  # the token is a pending install's: hold until it is verified


class Reason(enum.StrEnum):
    """Why a token was refused (a fixed set: these are metric labels)."""

    MISSING = "missing_token"
    UNKNOWN_PORTAL = "unknown_portal"
    REVOKED = "revoked"
    MISMATCH = "token_mismatch"
    EXPIRED = "token_expired"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: Reason | None = None


ACCEPTED = Decision(Verdict.ACCEPT)
QUARANTINED = Decision(Verdict.QUARANTINE)


@dataclass(frozen=True, slots=True)
class PortalTokens:
    """What the check needs to know about one portal."""

    status: str = ""
    tokens: Mapping[str, AcceptedToken] = field(default_factory=dict)

    @property
    def known(self) -> bool:
        return bool(self.status) or bool(self.tokens)


def decide(token: str | None, portal: PortalTokens, now: float) -> Decision:
    """ACCEPT, QUARANTINE or REJECT(reason) for `token` presented for `portal`.

    Every stored digest is compared, in constant time, so timing tells nothing about
    which (or whether a) digest almost matched."""
    if not token:
        return Decision(Verdict.REJECT, Reason.MISSING)
    if not portal.known:
        return Decision(Verdict.REJECT, Reason.UNKNOWN_PORTAL)
    if portal.status == Status.REVOKED:
        return Decision(Verdict.REJECT, Reason.REVOKED)
    presented = digest(token)
    found: AcceptedToken | None = None
    for stored, accepted in portal.tokens.items():
        if same_digest(presented, stored):
            found = accepted
    if found is None:
        return Decision(Verdict.REJECT, Reason.MISMATCH)
    if not found.valid_at(now):
        return Decision(Verdict.REJECT, Reason.EXPIRED)
    if found.kind == "pending":
        return QUARANTINED
    return ACCEPTED


def portal_tokens(status: bytes | None, raw_tokens: Mapping[bytes, bytes]) -> PortalTokens:
    """Build the cached view from what Redis answered (HGET status, HGETALL app_tokens)."""
    tokens: dict[str, AcceptedToken] = {}
    for stored, value in raw_tokens.items():
        with contextlib.suppress(ValueError, TypeError):
            tokens[stored.decode()] = AcceptedToken.decode(value)
    return PortalTokens(status.decode() if status else "", tokens)


class TokenCache:
    """Per-process cache of `PortalTokens`, invalidated by `Keys.portals_version`.

    A portal missing from the cache is read by a task of its own, shared by every request
    that waits for it: a request that gives up at its deadline leaves the read (and the
    others waiting on it) alone."""

    def __init__(self, client: aioredis.Redis, keys: Keys, poll_interval: float = POLL_INTERVAL) -> None:
        self._client = client
        self._keys = keys
        self.poll_interval = poll_interval
        self._entries: dict[str, PortalTokens] = {}
        self._loading: dict[str, asyncio.Task[PortalTokens]] = {}
        self._version: bytes | str | None = None
        self._poller: asyncio.Task[None] | None = None
        self._running = False

    def cached(self, member_id: str, token: str | None) -> Decision | None:
        """The decision, when it needs no Redis read (the hot path: no coroutine); None
        when the portal is not cached (then `check`)."""
        if not token:
            return Decision(Verdict.REJECT, Reason.MISSING)
        entry = self._entries.get(member_id)
        return None if entry is None else decide(token, entry, time.time())

    async def check(self, member_id: str, token: str | None, deadline: float | None = None) -> Decision:
        """Raises RedisError when the portal is not cached and Redis cannot say, TimeoutError
        when it does not say before `deadline` (event loop time)."""
        decision = self.cached(member_id, token)
        if decision is not None:
            return decision
        async with asyncio.timeout_at(deadline):
            entry = await asyncio.shield(self._load(member_id))
        return decide(token, entry, time.time())

    def _load(self, member_id: str) -> asyncio.Task[PortalTokens]:
        """One Redis read per member id however many requests are waiting for it."""
        task = self._loading.get(member_id)
        if task is None:
            task = asyncio.create_task(self._read(member_id), name="b24pipe-token-read")
            self._loading[member_id] = task
            task.add_done_callback(functools.partial(self._loaded, member_id))
        return task

    def _loaded(self, member_id: str, task: asyncio.Task[PortalTokens]) -> None:
        del self._loading[member_id]
        if not task.cancelled():
            task.exception()  # retrieved here: the waiters may all have given up

    async def _read(self, member_id: str) -> PortalTokens:
        generation = self._version
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hget(self._keys.portal(member_id), "status")
            pipe.hgetall(self._keys.app_tokens(member_id))
            status, raw_tokens = await pipe.execute()
        entry = portal_tokens(status, raw_tokens)
        if generation == self._version:  # not invalidated while we were reading
            if len(self._entries) >= MAX_CACHED:
                self._entries.clear()
            self._entries[member_id] = entry
        return entry

    def invalidate(self) -> None:
        self._entries.clear()

    async def poll_once(self) -> None:
        """Drop the cache if the version changed (or cannot be read: stale is unsafe)."""
        try:
            version: bytes | str | None = await self._client.get(self._keys.portals_version)
        except RedisError:
            self.invalidate()
            self._version = None
            return
        if version != self._version:
            self.invalidate()
            self._version = version

    async def _poll_forever(self) -> None:
        while self._running:
            try:
                await self.poll_once()
            except Exception as exc:  # keep polling whatever happens
                log(_logger, logging.WARNING, "token cache poll failed", error=type(exc).__name__)
                self.invalidate()
            await asyncio.sleep(self.poll_interval)

    async def start(self) -> None:
        self._running = True
        await self.poll_once()
        self._poller = asyncio.create_task(self._poll_forever(), name="b24pipe-token-poller")

    async def stop(self) -> None:
        self._running = False
        await stop_tasks([*self._loading.values(), *([self._poller] if self._poller else [])], STOP_WAIT)
        self._poller = None
