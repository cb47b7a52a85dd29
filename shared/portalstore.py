"""Redis operations on portal records, accepted application tokens, pending installs and
their quarantine: written once, run by the asyncio ingress and the synchronous workers and CLI.

Each operation is a `Transaction`: the Redis commands to send (plain commands, or calls
of the small Lua scripts beside this file where a read-modify-write must be atomic) and a
pure function turning the replies into a result. `run(client, tx)` and `await arun(client,
tx)` send one as a MULTI/EXEC transaction, so it is applied whole or not at all.

Every write of a portal record is one of these operations, the token refresh's
compare-and-set and the refresh lock it runs under included (`workers.rest.tokens` and
`workers.portals.lifecycle` take the same lock with the same commands, one async, one sync).

Every change that affects token checks increments `Keys.portals_version`: the ingress
polls that counter and drops its cached digests when it moves, which is how a revocation
reaches every ingress process within a second.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import redis
import redis.asyncio as aioredis

from shared import lua, rqkeys
from shared.crypto import TokenCipher
from shared.events import Event
from shared.keys import Keys
from shared.logs import security_event
from shared.oauth import AppInfo, Refreshed
from shared.portals import AcceptedToken, Portal, Status
from shared.settings import Settings

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class Cmd:
    args: tuple[str | int | bytes, ...]


@dataclass(frozen=True)
class Lua:
    name: str
    keys: tuple[str, ...]
    argv: tuple[str | int | bytes, ...]


Op = Cmd | Lua


def _ignore(_: list[Any]) -> None:
    return None


@dataclass(frozen=True)
class Transaction(Generic[T]):
    ops: tuple[Op, ...]
    parse: Callable[[list[Any]], T] = field(default=_ignore)  # type: ignore[assignment]

    def __add__(self, other: Transaction[U]) -> Transaction[tuple[T, U]]:
        """Both in one transaction; the result is the pair of their results."""
        cut = len(self.ops)
        first, second = self.parse, other.parse
        return Transaction(
            self.ops + other.ops, lambda replies: (first(replies[:cut]), second(replies[cut:]))
        )


def chain(*txs: Transaction[Any]) -> Transaction[None]:
    """Several transactions in one, their results ignored (each still parsed: a transaction's
    parse may report what happened, like `save_portal`'s re-authorization event)."""

    def parse(replies: list[Any]) -> None:
        at = 0
        for tx in txs:
            tx.parse(replies[at : at + len(tx.ops)])
            at += len(tx.ops)

    return Transaction(tuple(op for tx in txs for op in tx.ops), parse)


def _cmd(*args: str | int | bytes) -> Cmd:
    return Cmd(args)


# --- running transactions: the only place that knows sync from async -----------------------


def _queue(client: Any, pipe: Any, ops: Iterable[Op]) -> None:
    for op in ops:
        if isinstance(op, Cmd):
            pipe.execute_command(*op.args)
        else:
            script = lua.script(client, f"shared/lua/portalstore_{op.name}.lua")
            pipe.scripts.add(script)  # the pipeline loads missing scripts before MULTI
            pipe.execute_command("EVALSHA", script.sha, len(op.keys), *op.keys, *op.argv)


def run(client: redis.Redis, tx: Transaction[T]) -> T:
    pipe = client.pipeline(transaction=True)
    _queue(client, pipe, tx.ops)
    return tx.parse(pipe.execute())


async def arun(client: aioredis.Redis, tx: Transaction[T]) -> T:
    pipe = client.pipeline(transaction=True)
    _queue(client, pipe, tx.ops)
    return tx.parse(await pipe.execute())


# --- reading -------------------------------------------------------------------------------


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def load_portal(keys: Keys, member_id: str) -> Transaction[Portal | None]:
    return Transaction(
        (_cmd("HGETALL", keys.portal(member_id)),), lambda r: Portal.from_hash(r[0]) if r[0] else None
    )


def load_tokens(keys: Keys, member_id: str) -> Transaction[dict[str, AcceptedToken]]:
    def parse(replies: list[Any]) -> dict[str, AcceptedToken]:
        return {_text(k): AcceptedToken.decode(v) for k, v in replies[0].items()}

    return Transaction((_cmd("HGETALL", keys.app_tokens(member_id)),), parse)


def list_members(keys: Keys) -> Transaction[list[str]]:
    return Transaction((_cmd("SMEMBERS", keys.portals),), lambda r: sorted(_text(m) for m in r[0]))


# --- verified installs and updates ---------------------------------------------------------


@dataclass(frozen=True)
class Tokens:
    """Secrets that arrived with an install, update or `portals add` (clear text, in memory only)."""

    access_token: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)
    expires: int = 0
    application_token: str = field(default="", repr=False)


def verified_portal(
    existing: Portal | None,
    info: AppInfo,
    tokens: Tokens,
    cipher: TokenCipher,
    oauth_url: str,
    connector: str = "",
) -> Portal:
    """The record of a portal the authorization server vouched for: endpoints, scope and
    version from its answer (never from the request), the new tokens sealed. `connector`
    becomes its `auth_connector` when it has none (offline events: see workers.portals.offline)."""
    now = int(time.time())
    base = existing or Portal(member_id=info.member_id, domain=info.domain, created_at=now)
    portal = replace(
        base,
        domain=info.domain,
        client_endpoint=info.client_endpoint,
        server_endpoint=f"{oauth_url}/rest/",
        status=Status.ACTIVE,
        scope=info.scope,
        app_version=info.version,
        user_id=info.user_id,
        reason="verified by the authorization server",
        auth_connector=base.auth_connector or connector,
    )
    portal.seal_tokens(cipher, tokens.access_token, tokens.refresh_token, tokens.expires)
    return portal


@dataclass(frozen=True)
class Saved:
    """What saving a record changed: the status it had before, and the parked jobs released."""

    member_id: str
    previous: str  # "" for a new record
    status: str
    released: int


def save_portal(keys: Keys, portal: Portal) -> Transaction[Saved]:
    """Replace the record whole (a field dropped from the record does not linger) and, when
    it is active, release the portal's parked jobs in the same transaction.

    Every path that stores a new token (install, update, `portals add`, a re-verified
    install) goes through here, so a portal that needed re-authorization is restored and its
    parked jobs run, whichever path brought the token; and the security log says so."""
    member_id = portal.member_id
    status = str(portal.status)

    def parse(replies: list[Any]) -> Saved:
        previous = _text(replies[0]) if replies[0] is not None else ""
        saved = Saved(member_id, previous, status, int(replies[-1]))
        if previous == Status.REAUTH and status == Status.ACTIVE:
            # Logged here, not by each caller, so no path that restores a portal can forget it.
            security_event("reauthorized", member_id=member_id, released_jobs=saved.released)
        return saved

    return Transaction(
        (
            _cmd("HGET", keys.portal(member_id), "status"),
            _cmd("DEL", keys.portal(member_id)),
            _cmd("HSET", keys.portal(member_id), *_flat(portal.to_hash())),
            _cmd("SADD", keys.portals, member_id),
            _cmd("INCR", keys.portals_version),
            _index_op(keys, portal),
            _cmd("SADD" if portal.status is Status.REAUTH else "SREM", keys.reauth_portals, member_id),
            # an active record has a working pair, proof the app is installed: an
            # unconfirmed uninstall is moot
            *(
                [_cmd("SREM", keys.uninstall_unconfirmed, member_id)]
                if portal.status is Status.ACTIVE
                else []
            ),
            _release_op(keys, member_id),
        ),
        parse,
    )


def _index_op(keys: Keys, portal: Portal) -> Cmd:
    """The keep-alive index entry of a saved record: its pair's issue time when it is an
    active OAuth portal (the only kind a keep-alive refresh is for), no entry otherwise."""
    if portal.status is Status.ACTIVE and portal.refresh_token and not portal.webhook_url:
        return _cmd("ZADD", keys.token_issued, portal.updated_at, portal.member_id)
    return _cmd("ZREM", keys.token_issued, portal.member_id)


def _release_op(keys: Keys, member_id: str) -> Lua:
    return Lua(
        "release_parked",
        (keys.parked(member_id), keys.parked_portals, keys.portal(member_id)),
        (member_id, rqkeys.LUA_ARG),
    )


def release_parked(keys: Keys, member_id: str) -> Transaction[int]:
    """Put an active portal's parked jobs back on their queues; how many were released."""
    return Transaction((_release_op(keys, member_id),), lambda r: int(r[0]))


def set_app_token(keys: Keys, member_id: str, token_digest: str, grace_until: int) -> Transaction[bool]:
    """Make `token_digest` the accepted app token. The previous one stays valid until
    `grace_until` (0: not at all); a pending token is replaced. True when it changed."""
    entry = AcceptedToken(kind="app").encode()
    return Transaction(
        (
            Lua(
                "set_token",
                (keys.app_tokens(member_id), keys.portals_version),
                (token_digest, entry, int(time.time()), grace_until),
            ),
        ),
        lambda r: bool(r[0]),
    )


def give_connector(keys: Keys, member_id: str, connector: str) -> Transaction[str]:
    """The portal's `auth_connector`: `connector` given to a portal record that has none (one
    installed before offline events were configured); "" when there is no record."""
    return Transaction((Lua("connector", (keys.portal(member_id),), (connector,)),), lambda r: _text(r[0]))


def write_resealed(
    keys: Keys, member_id: str, record: str, changes: Iterable[tuple[str, str, str]]
) -> Transaction[int]:
    """Write (field, ciphertext read, new ciphertext) `changes` to `record` (a portal record or
    a pending install): 1 when written, 0 when a ciphertext changed since it was read, -1
    while a token refresh holds the portal's lock (`portalstore_reseal.lua` says why)."""
    argv = tuple(value for change in changes for value in change)
    return Transaction((Lua("reseal", (record, keys.refresh_lock(member_id)), argv),), lambda r: int(r[0]))


def add_token(keys: Keys, member_id: str, token_digest: str, token: AcceptedToken) -> Transaction[None]:
    """Accept one more token (an outgoing webhook's) beside the app's."""
    return Transaction(
        (
            _cmd("HSET", keys.app_tokens(member_id), token_digest, token.encode()),
            _cmd("INCR", keys.portals_version),
        )
    )


def commit_verified(
    keys: Keys, portal: Portal, token_digest: str, grace_until: int, pending: PendingInstall | None
) -> Transaction[bool]:
    """Store a verified install or update in one transaction: the record, its app token
    (when one came), and the end of the pending install of that same token, whose
    quarantine is kept for the caller to release. Other pending installs of the member id
    are left to their own re-verification. True when the app token changed."""
    token: Transaction[bool] = (
        set_app_token(keys, portal.member_id, token_digest, grace_until)
        if token_digest
        else Transaction((), _false)
    )
    cleanup: Transaction[None] = (
        drop_pending(keys, portal.member_id, pending.token_digest, quarantine=False)
        if pending is not None
        else Transaction(())
    )
    both = save_portal(keys, portal) + token + cleanup
    return Transaction(both.ops, lambda replies: both.parse(replies)[0][1])


def _false(_: list[Any]) -> bool:
    return False


# --- pending installs and their quarantine -------------------------------------------------


@dataclass(frozen=True)
class PendingInstall:
    """An install or update seen while the authorization server could not be reached."""

    portal: Portal  # status PENDING, domain and tokens from the request (sealed): unverified
    token_digest: str  # the application token it brought
    version: str | None  # for an update, the version app.info must name
    grace: bool  # an update: the previous app token gets the grace period
    first_seen: int
    attempts: int = 0
    superseded: bool = False  # a newer install of the member id was verified meanwhile

    def to_hash(self) -> dict[str, str]:
        extra = {
            "pending_token_digest": self.token_digest,
            "pending_version": "" if self.version is None else self.version,
            "pending_is_update": "1" if self.version is not None else "",
            "pending_grace": "1" if self.grace else "",
            "pending_first_seen": str(self.first_seen),
            "pending_attempts": str(self.attempts),
            "pending_superseded": "1" if self.superseded else "",
        }
        return {**self.portal.to_hash(), **extra}

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> PendingInstall:
        text = {_text(k): _text(v) for k, v in raw.items()}
        return cls(
            portal=Portal.from_hash(raw),
            token_digest=text.get("pending_token_digest", ""),
            version=text.get("pending_version", "") if text.get("pending_is_update") else None,
            grace=bool(text.get("pending_grace")),
            first_seen=int(text.get("pending_first_seen") or 0),
            attempts=int(text.get("pending_attempts") or 0),
            superseded=bool(text.get("pending_superseded")),
        )


def load_pending(keys: Keys, member_id: str, token_digest: str) -> Transaction[PendingInstall | None]:
    return Transaction(
        (_cmd("HGETALL", keys.pending_install(member_id, token_digest)),),
        lambda r: PendingInstall.from_hash(r[0]) if r[0] else None,
    )


def pending_digests(keys: Keys, member_id: str) -> Transaction[list[str]]:
    """The token digests of the member id's pending installs."""
    return Transaction(
        (_cmd("SMEMBERS", keys.pending_tokens(member_id)),), lambda r: sorted(_text(d) for d in r[0])
    )


def load_pendings(client: redis.Redis, keys: Keys, member_id: str) -> list[PendingInstall]:
    """Every pending install of a member id (the CLI's view; synchronous)."""
    found = [
        run(client, load_pending(keys, member_id, token_digest))
        for token_digest in run(client, pending_digests(keys, member_id))
    ]
    return [pending for pending in found if pending is not None]


def _source(member_id: str, token_digest: str) -> str:
    """A pending install's name in the global bookkeeping (member ids hold no `:`)."""
    return f"{member_id}:{token_digest}"


# What `save_pending` and `quarantine_push` answer besides success
ALREADY_PENDING = 0  # this (member id, token) already waits: the first install is kept
FULL = -1  # the global cap on pending installs, or this quarantine's entry cap
ORPHAN = -2  # no pending install waits for this token: nothing could release the event
OVER_BYTES = -3  # the global or per-install byte cap


@dataclass(frozen=True)
class Bounds:
    """How much unverified installs may hold (B24PIPE_QUARANTINE_*, B24PIPE_PENDING_MAX)."""

    ttl: int  # seconds a pending install and its quarantine live
    max_events: int  # events per quarantine
    max_pending: int  # pending installs in all
    max_bytes: int  # quarantined bytes in all
    source_bytes: int  # quarantined bytes per pending install

    @classmethod
    def of(cls, settings: Settings) -> Bounds:
        return cls(
            ttl=settings.quarantine_ttl,
            max_events=max(1, settings.quarantine_max),
            max_pending=settings.pending_max,
            max_bytes=settings.quarantine_bytes,
            source_bytes=int(settings.quarantine_bytes * settings.quarantine_share),
        )


def save_pending(keys: Keys, pending: PendingInstall, bounds: Bounds) -> Transaction[int]:
    """Store a pending install and accept its token as "pending" (events carrying it go to
    its own quarantine), unless that token is already accepted as something else. Never
    replaces another pending install; 1 stored, `ALREADY_PENDING` or `FULL`."""
    member_id = pending.portal.member_id
    expiry = pending.first_seen + bounds.ttl
    entry = AcceptedToken("pending", expires_at=expiry).encode()
    return Transaction(
        (
            Lua(
                "pending_add",
                (
                    keys.pending_install(member_id, pending.token_digest),
                    keys.pending_tokens(member_id),
                    keys.pending_index,
                    keys.quarantine_bytes,
                    keys.app_tokens(member_id),
                    keys.portals_version,
                ),
                (
                    pending.token_digest,
                    _source(member_id, pending.token_digest),
                    int(time.time()),
                    expiry,
                    bounds.max_pending,
                    entry,
                    *_flat(pending.to_hash()),
                ),
            ),
        ),
        lambda r: int(r[0]),
    )


def supersede_pending(keys: Keys, member_id: str, seen_at: int, token_digest: str) -> Transaction[int]:
    """Mark the member id's pending installs that arrived before `seen_at` (when the install
    just verified, `token_digest`'s, arrived) as superseded; how many."""
    return Transaction(
        (
            Lua(
                "supersede_pending",
                (keys.pending_tokens(member_id),),
                (keys.pending_install(member_id, ""), seen_at, token_digest),
            ),
        ),
        lambda r: int(r[0]),
    )


def count_attempt(keys: Keys, member_id: str, token_digest: str) -> Transaction[int]:
    return Transaction(
        (_cmd("HINCRBY", keys.pending_install(member_id, token_digest), "pending_attempts", 1),),
        lambda r: int(r[0]),
    )


def drop_pending(keys: Keys, member_id: str, token_digest: str, *, quarantine: bool) -> Transaction[None]:
    """Forget one pending install; its token only if still pending; its quarantined events
    too when `quarantine` (refuted), otherwise they are released by the caller. Another
    pending install of the same member id keeps everything it holds."""
    return Transaction(
        (
            Lua(
                "drop_pending",
                (
                    keys.app_tokens(member_id),
                    keys.portals_version,
                    keys.pending_install(member_id, token_digest),
                    keys.pending_tokens(member_id),
                    keys.pending_index,
                    keys.quarantine_bytes,
                    keys.quarantine(member_id, token_digest),
                ),
                (token_digest, _source(member_id, token_digest), "1" if quarantine else "0"),
            ),
        )
    )


def quarantine_push(
    keys: Keys, member_id: str, token_digest: str, event_json: bytes, bounds: Bounds
) -> Transaction[int]:
    """Hold one stripped event for the pending install of its token: the new length, or
    `FULL`, `ORPHAN`, `OVER_BYTES` (then nothing is held and the event must get a 503)."""
    return Transaction(
        (
            Lua(
                "quarantine_push",
                (
                    keys.quarantine(member_id, token_digest),
                    keys.pending_install(member_id, token_digest),
                    keys.quarantine_bytes,
                    keys.pending_index,
                ),
                (
                    bounds.max_events,
                    event_json,
                    _source(member_id, token_digest),
                    bounds.max_bytes,
                    bounds.source_bytes,
                    int(time.time()),
                ),
            ),
        ),
        lambda r: int(r[0]),
    )


def quarantine_read(keys: Keys, member_id: str, token_digest: str) -> Transaction[list[bytes]]:
    return Transaction(
        (_cmd("LRANGE", keys.quarantine(member_id, token_digest), 0, -1),), lambda r: list(r[0])
    )


def quarantined_events(raw: list[bytes]) -> list[Event]:
    """The held events, oldest first; entries that no longer parse are skipped."""
    events = []
    for item in raw:
        try:
            events.append(Event.model_validate_json(item))
        except ValueError:
            continue
    return events


def quarantine_trim(keys: Keys, member_id: str, token_digest: str, released: int) -> Transaction[None]:
    """Drop the first `released` events (those already enqueued): a crash between enqueue
    and trim releases them again, and the enqueue de-duplicates on the event id."""
    return Transaction((_cmd("LTRIM", keys.quarantine(member_id, token_digest), released, -1),))


def adopt_legacy_pending(client: redis.Redis, keys: Keys, member_id: str, bounds: Bounds) -> str:
    """Move a pending install stored before pending installs were kept per token (one hash
    and one quarantine per member id) to today's keys, its quarantine with it, so that its
    re-verification job still finds it and its acknowledged events are not lost. Returns the
    token digest it waits for, or "" when there is none. Synchronous: the worker's job."""
    legacy, legacy_quarantine = f"{keys.ns}:pending:{member_id}", f"{keys.ns}:quarantine:{member_id}"
    raw = client.hgetall(legacy)
    if not raw:
        return ""
    pending = PendingInstall.from_hash(raw)
    token_digest = pending.token_digest
    run(client, save_pending(keys, pending, replace(bounds, max_pending=2**31)))  # accepted already
    held = [
        item if isinstance(item, bytes) else item.encode() for item in client.lrange(legacy_quarantine, 0, -1)
    ]
    target = keys.quarantine(member_id, token_digest)
    with client.pipeline(transaction=True) as pipe:
        if held:
            pipe.rpush(target, *held)
            pipe.expireat(target, pending.first_seen + bounds.ttl)
            pipe.hincrby(keys.quarantine_bytes, _source(member_id, token_digest), sum(map(len, held)))
        pipe.delete(legacy, legacy_quarantine)
        pipe.execute()
    return token_digest


def _forget_pending_op(keys: Keys, member_id: str) -> Lua:
    return Lua(
        "forget_pending",
        (keys.pending_tokens(member_id), keys.pending_index, keys.quarantine_bytes),
        (member_id, keys.pending_install(member_id, ""), keys.quarantine(member_id, "")),
    )


# --- revocation and deletion ---------------------------------------------------------------


def revoke(keys: Keys, member_id: str, reason: str) -> Transaction[None]:
    """Stop accepting the portal's events (no accepted token left) and drop every secret."""
    now = str(int(time.time()))
    return Transaction(
        (
            _cmd(
                "HSET",
                keys.portal(member_id),
                *_flat(
                    {
                        "status": str(Status.REVOKED),
                        "access_token": "",
                        "refresh_token": "",
                        "webhook_url": "",
                        "expires": "0",
                        "reason": reason,
                        "updated_at": now,
                    }
                ),
            ),
            _cmd("HINCRBY", keys.portal(member_id), "token_gen", 1),
            _cmd("DEL", keys.app_tokens(member_id)),
            _forget_pending_op(keys, member_id),
            _cmd("ZREM", keys.token_issued, member_id),
            _cmd("SREM", keys.reauth_portals, member_id),
            _cmd("SREM", keys.uninstall_unconfirmed, member_id),
            _cmd("INCR", keys.portals_version),
        )
    )


def mark_uninstall_unconfirmed(keys: Keys, member_id: str, reason: str) -> Transaction[None]:
    """Record an uninstall Bitrix24 could not confirm: the portal and its data stay, the
    record says why, and the set (a gauge, `portals list`) keeps it in view until a
    confirmation, a new working token or `portals purge`."""
    return Transaction(
        (
            _cmd("HSET", keys.portal(member_id), "reason", f"uninstall unconfirmed: {reason}"),
            _cmd("SADD", keys.uninstall_unconfirmed, member_id),
        )
    )


def data_patterns(keys: Keys, member_id: str) -> tuple[str, ...]:
    """SCAN patterns of the per-entity keys b24pipe keeps for a portal (purged with it).

    Built from `Keys` with a wildcard in the entity position, so another portal's keys
    never match (member ids hold no glob characters: see `ingress.delivery`)."""
    return (
        keys.operating(member_id, "*"),
        keys.echo_marks(member_id, "*", "*", "*"),
        keys.coalesce_group(member_id, "*", "*"),
        keys.chain(member_id, "*"),
    )


def purge(keys: Keys, member_id: str, data_keys: Iterable[bytes | str]) -> Transaction[None]:
    """Delete the portal: record, tokens, pending state, and the data keys found by SCAN."""
    fixed = (
        keys.portal(member_id),
        keys.app_tokens(member_id),
        keys.refresh_lock(member_id),
        keys.rate_bucket(member_id, "namespace"),
        keys.offline_batches(member_id),
        keys.offline_state(member_id),
        keys.offline_queued(member_id),
        keys.offline_unreadable(member_id),
        keys.bind_state(member_id),
        keys.probe(member_id),
    )
    return Transaction(
        (
            _cmd("DEL", *fixed, *data_keys),
            _forget_pending_op(keys, member_id),
            _cmd("SREM", keys.portals, member_id),
            _cmd("ZREM", keys.token_issued, member_id),
            _cmd("SREM", keys.reauth_portals, member_id),
            _cmd("ZREM", keys.offline_due, member_id),
            _cmd("ZREM", keys.offline_held, member_id),
            _cmd("HDEL", keys.offline_backlog, member_id),
            _cmd("SREM", keys.bindings_missing, member_id),
            _cmd("HDEL", keys.last_event, member_id),
            _cmd("SREM", keys.uninstall_unconfirmed, member_id),
            _cmd("INCR", keys.portals_version),
        )
    )


def _flat(mapping: dict[str, str]) -> tuple[str, ...]:
    return tuple(part for pair in mapping.items() for part in pair)


def purge_sync(client: redis.Redis, keys: Keys, member_id: str) -> None:
    """Find the portal's data keys with SCAN, then delete everything in one transaction.

    Synchronous only: the worker (uninstall with CLEAN=1) and the CLI purge; the ingress never does."""
    found = [
        key
        for pattern in data_patterns(keys, member_id)
        for key in client.scan_iter(match=pattern, count=1000)
    ]
    run(client, purge(keys, member_id, found))


# --- token refresh: the lock it runs under and the compare-and-set that saves it -----------


def refresh_lease(settings: Settings, requests: int = 1) -> float:
    """Seconds a refresh lock is held at most: `requests` HTTP requests, one more timeout for
    connection setup, and 5 s to save (the lease must outlive what is done under it)."""
    return settings.http_timeout * (requests + 1) + 5


@dataclass(frozen=True)
class RefreshLock:
    """One claim on a portal's refresh lock: whoever holds it may use up the stored refresh
    token. The random holder id lets a release leave alone a lease someone else took over."""

    key: str
    holder: str
    lease_ms: int

    @classmethod
    def of(cls, keys: Keys, member_id: str, lease: float) -> RefreshLock:
        return cls(keys.refresh_lock(member_id), secrets.token_hex(16), int(lease * 1000))


def take_lock(lock: RefreshLock) -> Transaction[bool]:
    """True when the lock is ours now (nobody held it)."""
    return Transaction((_cmd("SET", lock.key, lock.holder, "NX", "PX", lock.lease_ms),), lambda r: bool(r[0]))


def release_lock(lock: RefreshLock) -> Transaction[bool]:
    """Free the lock if it is still ours (portalstore_lock_release.lua); True when it was."""
    return Transaction((Lua("lock_release", (lock.key,), (lock.holder,)),), lambda r: bool(r[0]))


NOT_SAVED = -1  # what a compare-and-set answers when the record moved on (nothing written)


def _token_cas(
    keys: Keys, used: Portal, fields: Mapping[str, str], issued_at: int | None
) -> Transaction[int]:
    """portalstore_token_cas.lua: write `fields` unless the stored refresh token is no longer
    the one `used` holds. `issued_at`: a new pair issued then (token_gen bumped, keep-alive
    index moved); None: a status change. The token_gen stored, or `NOT_SAVED`."""
    member_id = used.member_id
    return Transaction(
        (
            Lua(
                "token_cas",
                (keys.portal(member_id), keys.portals_version, keys.token_issued, keys.reauth_portals),
                (
                    used.refresh_token,
                    "0" if issued_at is None else "1",
                    member_id,
                    issued_at or 0,
                    *_flat(dict(fields)),
                ),
            ),
        ),
        lambda r: int(r[0]),
    )


def save_refreshed(keys: Keys, used: Portal, refreshed: Refreshed, cipher: TokenCipher) -> Transaction[int]:
    """Store the pair a refresh of `used`'s refresh token bought, unless another pair was
    saved meanwhile. The answer's endpoint and user id are taken only when it names this
    portal (whom the app writes as: echo marks are keyed by it, and a portal added by hand
    learns it at its first refresh). The token_gen stored, or `NOT_SAVED`."""
    fresh = replace(used)
    fresh.seal_tokens(cipher, refreshed.access_token, refreshed.refresh_token, refreshed.expires)
    fields = {
        "access_token": fresh.access_token,
        "refresh_token": fresh.refresh_token,
        "expires": str(fresh.expires),
        "updated_at": str(refreshed.issued_at),
    }
    if (refreshed.member_id or used.member_id) == used.member_id:
        if refreshed.client_endpoint:
            fields["client_endpoint"] = refreshed.client_endpoint
        if refreshed.user_id > 0:
            fields["user_id"] = str(refreshed.user_id)
    return _token_cas(keys, used, fields, issued_at=refreshed.issued_at)


def mark_reauth(keys: Keys, used: Portal, reason: str) -> Transaction[int]:
    """The refresh token `used` holds was refused for good: the portal needs re-authorization,
    unless a newer pair was saved meanwhile (then `NOT_SAVED`: that pair is the answer)."""
    fields = {"status": str(Status.REAUTH), "reason": reason, "updated_at": str(int(time.time()))}
    return _token_cas(keys, used, fields, issued_at=None)


def update_fields(keys: Keys, member_id: str, fields: Mapping[str, str]) -> Transaction[None]:
    """Change fields of a record that are no tokens (a moved endpoint); caches see the bump."""
    return Transaction(
        (_cmd("HSET", keys.portal(member_id), *_flat(dict(fields))), _cmd("INCR", keys.portals_version))
    )


def unindex(keys: Keys, member_id: str) -> Transaction[None]:
    """Leave the keep-alive index (a portal that cannot be refreshed until a new token)."""
    return Transaction((_cmd("ZREM", keys.token_issued, member_id),))
