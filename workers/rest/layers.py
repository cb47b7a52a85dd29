"""The REST client's request path: one layer for each reason to send a call again.

A call goes down the layers, outermost first, and its exchange comes back up. Each layer
passes the call on, and goes round again only for its own reason:

    EchoSettling    drops the echo marks of a write that did not happen            no loop
    Resending       5xx, HTML pages, lost connections: again with backoff, when the
                    method kind makes that safe (workers.rest.methodkind)           MAX_ATTEMPTS
    Relocating      3xx: a portal that moved, followed once it is confirmed        once
    Authorizing     the portal's current pair; a 401 re-reads it, or refreshes     AUTH_ROUNDS
    Operating       the methods' operating windows (wait or defer); a 429 holds
                    the method and goes again; a success feeds the window          until deferred
    Limiting        a slot in the shared limiter (wait or defer); a 503
                    QUERY_LIMIT_EXCEEDED fills the bucket and goes again           MAX_ATTEMPTS
    EchoMarking     marks a write's echoes once, just before its first send        no loop
    Sending         one HTTP exchange, counted; a lost answer comes back, not raised

Layers above `Authorizing` take the call; below it, the call and the portal record whose
pair it is sent with. A failed answer travels up as an `Exchange` like any other, and
`Resending` is where it becomes the typed error the caller gets (layers below raise only
for their own reason: a deferral, a refused move, a parked portal). What a layer decides is
a pure function beside it; any layer can be built directly on `Sending`, which is how
tests/workers/rest/test_layers.py tries each one alone against the simulator. `Context`
(workers.rest.client) chains them once per process; `AsyncB24._request` sends each call
down the chain and reads the answer that comes out.

httpx layers its client the same way (`_send_handling_auth`, `_send_handling_redirects`,
`_send_single_request`); here limits, echo marks and resending are layers of their own.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from shared.backoff import backoff
from shared.crypto import TokenCipher
from shared.logs import security_event
from shared.portals import Portal
from shared.rateplan import PlanError, RatePlan, parse_plan
from workers.errors import ApiError, B24Error, B24PipeError, OperatingLimit, RateLimited, WriteUncertain
from workers.guards.loop import EchoMarker
from workers.guards.writemap import Echo
from workers.rest import metrics as restmetrics
from workers.rest.methodkind import Kind, calls_kind, resend_safe
from workers.rest.operating import OperatingWindow, Report, report_from
from workers.rest.query import build_query
from workers.rest.ratelimit import Limiter
from workers.rest.relocate import Relocator
from workers.rest.tokens import TokenStore, portal_hosts
from workers.rest.transport import (
    NOT_SENT,
    TIMED_OUT,
    Answer,
    Transport,
    error_code,
    error_for,
    host_of,
    php_keyed,
)

MAX_ATTEMPTS = 5  # sends of one call for one reason (transient failures; 503 refusals)
RESEND_BASE, RESEND_CAP = 1.0, 8.0  # seconds: the first resend within 1 s, then up to 8 s apart
AUTH_ROUNDS = 8  # 401s for pairs other processes replaced, before the job is retried later
OPERATING_HOLD = 60.0  # seconds a method answered 429 is held (Bitrix24 names no reset time)
_REFRESHABLE = frozenset({"expired_token", "invalid_token"})


@dataclass
class Call:
    """One logical call on its way down the layers."""

    member_id: str
    method: str  # what limits, metrics and errors name ("batch" for a batch)
    params: dict[str, Any]
    methods: tuple[str, ...]  # the methods it runs (a batch's commands)
    batch: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None
    v3: bool = False
    idempotency_key: str | None = None
    echoes: list[Echo] | None = None  # set by EchoMarking, before the first send
    writer: int | None = None


@dataclass(frozen=True)
class Exchange:
    """What one send gave: the answer, or the transport error that lost it."""

    portal: Portal
    answer: Answer | None
    lost: ApiError | None = None

    def failure(self, method: str) -> B24Error | None:
        """The typed error this exchange ended in, or None for a success."""
        if self.answer is None:
            assert self.lost is not None
            return self.lost
        if error_code(self.answer) is None:
            return None
        return error_for(self.answer, method)

    @property
    def payload(self) -> dict[str, Any]:
        """A successful exchange's JSON object."""
        assert self.answer is not None and self.answer.payload is not None
        return self.answer.payload


class Layer(Protocol):
    """A layer above the tokens: sends a call."""

    async def send(self, call: Call) -> Exchange: ...


class PortalLayer(Protocol):
    """A layer below the tokens: sends a call with one portal record's pair."""

    async def send(self, call: Call, portal: Portal) -> Exchange: ...


# --- echo marks: set just before the first send, dropped when the write did not happen ------


class EchoSettling:
    """Drop the echo marks a write will not use: all of them when the call failed, those of a
    batch's commands Bitrix24 refused (or did not run after a halt) when it succeeded.

    Even a write that may have run (`WriteUncertain`) drops its marks: a mark kept for an
    echo that never comes would swallow a person's next change of the entity, while an echo
    that does come unmarked only runs a handler once more (the loop breaker bounds that)."""

    def __init__(self, marker: EchoMarker, inner: Layer) -> None:
        self._marker = marker
        self._inner = inner

    async def send(self, call: Call) -> Exchange:
        try:
            exchange = await self._inner.send(call)
        except B24PipeError:
            await self._marker.release(call.member_id, call.writer, call.echoes or [])
            raise
        if call.batch is not None and call.echoes:
            ran = php_keyed((exchange.payload.get("result") or {}).get("result"))
            refused = [command for key, command in call.batch.items() if key not in ran]
            await self._marker.release_calls(call.member_id, call.writer, refused)
        return exchange


class EchoMarking:
    """Mark a write's echoes once, as late as possible: just before its first send, since
    the echo may arrive before the answer, and not while it waits for its turn, when a
    person's change of the same entity would be taken for it."""

    def __init__(self, marker: EchoMarker, inner: PortalLayer) -> None:
        self._marker = marker
        self._inner = inner

    async def send(self, call: Call, portal: Portal) -> Exchange:
        if call.echoes is None:
            call.writer = portal.user_id or None
            call.echoes = await self._marker.mark(call.member_id, call.writer, call.method, call.params)
        return await self._inner.send(call, portal)


# --- resending: transient failures, by what the call does -----------------------------------


def final_error(error: B24Error, kind: Kind, keyed: bool) -> B24Error | None:
    """The error the caller gets instead of a resend, or None when the call may go again.

    Not retryable, or Bitrix24 overloaded: as it is. Lost after it may have reached
    Bitrix24, for a call that is not safe to run twice: `WriteUncertain`."""
    if not error.retryable or error.code == "OVERLOAD_LIMIT":
        return error
    if error.code != NOT_SENT and not resend_safe(kind, keyed):
        return WriteUncertain(
            error.code, "the write may or may not have happened", method=error.method, status=error.status
        )
    return None


def resend_delay(error: B24Error, attempt: int, keyed: bool, timeout: float) -> float:
    """Seconds before resend number `attempt`: the backoff, and for a keyed call that timed
    out at least the timeout, since the first request may still be running and Bitrix24 runs
    two requests with one key at the same moment both."""
    delay = backoff(attempt, RESEND_BASE, RESEND_CAP, random.random(), jitter="full")
    if error.code == TIMED_OUT and keyed:
        delay = max(delay, timeout)
    return delay


class Resending:
    """Send again after a transient failure (5xx, HTML page, lost connection), with backoff,
    when that is safe for what the call does; every other failure is raised here, typed."""

    def __init__(self, timeout: float, inner: Layer) -> None:
        self._timeout = timeout
        self._inner = inner

    async def send(self, call: Call) -> Exchange:
        kind = calls_kind(call.methods)
        keyed = call.idempotency_key is not None
        attempts = 0
        while True:
            exchange = await self._inner.send(call)
            error = exchange.failure(call.method)
            if error is None:
                return exchange
            if error.code == "OVERLOAD_LIMIT":
                security_event("limit_hit", member_id=call.member_id, method=call.method, code=error.code)
            final = final_error(error, kind, keyed)
            if isinstance(final, WriteUncertain):
                restmetrics.UNCERTAIN_WRITES.labels(method=restmetrics.method_label(call.method)).inc()
            if final is not None:
                raise final
            attempts += 1
            if attempts >= MAX_ATTEMPTS:
                raise error
            await asyncio.sleep(resend_delay(error, attempts, keyed, self._timeout))


# --- relocation: a portal that moved ---------------------------------------------------------


def redirect_target(call: Call) -> str:
    """What a portal's redirect names after its endpoint: the method, or for REST 3.0
    `api/<method>` (the endpoint is what comes before "api/")."""
    return f"api/{call.method}" if call.v3 else call.method


class Relocating:
    """Follow a portal's move once, after the authorization server confirmed it
    (workers.rest.relocate); a second redirect in one call is an error."""

    def __init__(self, relocator: Relocator, inner: Layer) -> None:
        self._relocator = relocator
        self._inner = inner

    async def send(self, call: Call) -> Exchange:
        moved = False
        while True:
            exchange = await self._inner.send(call)
            location = exchange.answer.location if exchange.answer else ""
            if not location:
                return exchange
            if moved:
                raise ApiError("TOO_MANY_REDIRECTS", method=call.method)
            moved = True
            await self._relocator.follow(exchange.portal, location, redirect_target(call))


# --- tokens: the current pair, re-read or refreshed after a 401 ------------------------------


class Cure(Enum):
    """What to do about a 401 for an OAuth pair."""

    RESEND = "resend"  # another process replaced the pair meanwhile: send with the new one
    REFRESH = "refresh"  # the stored pair is stale: refresh once, then send again
    NONE = "none"  # nothing can mend it: the 401 is the answer


def refused_pair(exchange: Exchange) -> bool:
    """A 401 for an OAuth pair (a webhook's 401 has no pair to replace)."""
    answer = exchange.answer
    return answer is not None and answer.status == 401 and not exchange.portal.webhook_url


def cure(code: str | None, rotated: bool, refreshed: bool) -> Cure:
    """The cure for a 401 with error `code`: `rotated` when the stored pair is not the one
    sent; `refreshed` when this call already refreshed (a fresh pair refused is final)."""
    if rotated:
        return Cure.RESEND
    if refreshed or code not in _REFRESHABLE:
        return Cure.NONE
    return Cure.REFRESH


class Authorizing:
    """Send with the portal's current pair (refreshed single-flight when near expiry). A 401
    for a pair another process has replaced is sent again with the new one, however often
    within AUTH_ROUNDS; one the stored pair gets is cured by one refresh, which raises
    `ReauthRequired` only when the latest refresh token is refused."""

    def __init__(self, tokens: TokenStore, inner: PortalLayer) -> None:
        self._tokens = tokens
        self._inner = inner

    async def send(self, call: Call) -> Exchange:
        refreshed = False
        for _ in range(AUTH_ROUNDS):
            portal = await self._tokens.fresh(call.member_id)
            exchange = await self._inner.send(call, portal)
            if not refused_pair(exchange):
                return exchange
            current = await self._tokens.load(call.member_id)
            assert exchange.answer is not None
            step = cure(error_code(exchange.answer), current.token_gen != portal.token_gen, refreshed)
            if step is Cure.NONE:
                return exchange
            if step is Cure.REFRESH:
                await self._tokens.refresh(portal)
                refreshed = True
        raise ApiError("AUTH_CHURN", "the portal's tokens kept changing during the call", method=call.method)


# --- operating windows: Bitrix24's per-method time budget ----------------------------------


def operating_reports(call: Call, payload: Mapping[str, Any], now: float) -> list[tuple[str, Report]]:
    """The (method, report) pairs a successful answer carries: its `time` block, or for a
    batch each command's block in `result_time`."""
    if call.batch is None:
        report = report_from(payload.get("time"), now)
        return [] if report is None else [(call.method, report)]
    times = php_keyed((payload.get("result") or {}).get("result_time"))
    reports = []
    for key, block in times.items():
        report = report_from(block, now)
        if key in call.batch and report is not None:
            reports.append((call.batch[key][0], report))
    return reports


class Operating:
    """Wait for the methods' operating windows (or raise `OperatingLimit` past `max_wait`);
    record what each success reports; after a 429 OPERATION_TIME_LIMIT (not run), hold the
    methods and go round again."""

    def __init__(self, window: OperatingWindow, max_wait: float, inner: PortalLayer) -> None:
        self._window = window
        self._max_wait = max_wait
        self._inner = inner

    async def send(self, call: Call, portal: Portal) -> Exchange:
        while True:
            await self._wait(call)
            exchange = await self._inner.send(call, portal)
            if exchange.answer is None:
                return exchange
            code = error_code(exchange.answer)
            if code == "OPERATION_TIME_LIMIT":
                security_event("limit_hit", member_id=call.member_id, method=call.method, code=code)
                for name in call.methods:
                    await self._window.blocked(call.member_id, name, time.time() + OPERATING_HOLD)
                continue
            if code is None:
                for name, report in operating_reports(call, exchange.payload, time.time()):
                    await self._window.record(call.member_id, name, report)
            return exchange

    async def _wait(self, call: Call) -> None:
        for name in call.methods:
            pause = await self._window.pause(call.member_id, name)
            if pause > self._max_wait:
                restmetrics.DEFERRED.labels(reason="operating").inc()
                raise OperatingLimit(pause, method=name)
            if pause > 0:
                await asyncio.sleep(pause)


# --- the shared limiter: the portal's request rate -------------------------------------------


def plan_of(portal: Portal, default: RatePlan) -> RatePlan:
    """The portal's own rate plan, else (none, or one that does not parse) the default."""
    if not portal.plan:
        return default
    try:
        return parse_plan(portal.plan)
    except PlanError:
        return default


class Limiting:
    """Take a slot in the portal's shared bucket before each send (or raise `RateLimited`
    past `max_wait`); after a 503 QUERY_LIMIT_EXCEEDED (not run), treat the bucket as full
    and go round again, up to MAX_ATTEMPTS refusals."""

    def __init__(self, limiter: Limiter, default_plan: RatePlan, max_wait: float, inner: PortalLayer) -> None:
        self._limiter = limiter
        self._default_plan = default_plan
        self._max_wait = max_wait
        self._inner = inner

    async def send(self, call: Call, portal: Portal) -> Exchange:
        plan = plan_of(portal, self._default_plan)
        refusals = 0
        while True:
            try:
                waited = await self._limiter.acquire(call.member_id, plan, self._max_wait)
            except RateLimited as exc:
                restmetrics.DEFERRED.labels(reason="rate").inc()
                raise RateLimited(exc.after, method=call.method) from None
            restmetrics.LIMITER_WAIT.observe(waited)
            exchange = await self._inner.send(call, portal)
            if exchange.answer is None:
                return exchange
            code = error_code(exchange.answer)
            if exchange.answer.status == 503:
                restmetrics.LIMIT_503.labels(
                    code="QUERY_LIMIT_EXCEEDED" if code == "QUERY_LIMIT_EXCEEDED" else "other"
                ).inc()
            if code != "QUERY_LIMIT_EXCEEDED":
                return exchange
            security_event("limit_hit", member_id=call.member_id, method=call.method, code=code)
            await self._limiter.saturate(call.member_id, plan)
            refusals += 1
            if refusals >= MAX_ATTEMPTS:
                raise RateLimited(1 / plan.drain, method=call.method)


# --- one HTTP exchange ---------------------------------------------------------------------


def v3_base(base: str) -> str:
    """REST 3.0's address for a v2 base: `/rest/` becomes `/rest/api/` (also in a webhook's
    `/rest/<user>/<secret>/`)."""
    head, sep, tail = base.rpartition("/rest/")
    if not sep:
        return base.rstrip("/") + "/api/"
    return f"{head}/rest/api/{tail}"


def with_connector(portal: Portal, call: Call, is_write: Callable[[str], bool]) -> dict[str, Any]:
    """The call's params; writes of a portal with an `auth_connector` carry it (each write
    command of a batch too): Bitrix24 then leaves them out of the offline-event queue bound
    with the same one."""
    connector = portal.auth_connector
    params = call.params
    if not connector or not is_write(call.method):
        return params
    if call.method.strip().lower() != "batch":
        return {**params, "auth_connector": connector}
    suffix = build_query({"auth_connector": connector})
    cmd = {
        key: f"{text}{'&' if '?' in text else '?'}{suffix}"
        if isinstance(text, str) and is_write(text.partition("?")[0])
        else text
        for key, text in dict(params.get("cmd") or {}).items()
    }
    return {**params, "cmd": cmd}


def request_for(
    portal: Portal, call: Call, cipher: TokenCipher, is_write: Callable[[str], bool]
) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    """URL, JSON body and allowed hosts. The token goes in the body, never in the URL."""
    params = with_connector(portal, call, is_write)
    suffix = "" if call.v3 else ".json"
    if portal.webhook_url:
        base = portal.open_webhook(cipher)
        if call.v3:
            base = v3_base(base)
        return f"{base.rstrip('/')}/{call.method}{suffix}", params, (*portal_hosts(portal), host_of(base))
    endpoint = portal.client_endpoint or f"https://{portal.domain}/rest/"
    if call.v3:
        endpoint = v3_base(endpoint)
    body = {**params, "auth": portal.open_access(cipher)}
    return f"{endpoint.rstrip('/')}/{call.method}{suffix}", body, portal_hosts(portal)


class Sending:
    """One HTTP exchange, counted. A transport failure comes back as `lost`, not raised:
    only `Resending` knows whether the call may be sent again."""

    def __init__(self, transport: Transport, cipher: TokenCipher, is_write: Callable[[str], bool]) -> None:
        self._transport = transport
        self._cipher = cipher
        self._is_write = is_write

    async def send(self, call: Call, portal: Portal) -> Exchange:
        url, body, hosts = request_for(portal, call, self._cipher, self._is_write)
        headers = {"Idempotency-Key": call.idempotency_key} if call.idempotency_key else None
        label = restmetrics.method_label(call.method)
        started = time.perf_counter()
        try:
            answer = await self._transport.post(
                url, json=body, headers=headers, portal_hosts=hosts, method=call.method, follow=False
            )
        except ApiError as exc:
            restmetrics.CALLS.labels(method=label, status="error").inc()
            return Exchange(portal, None, lost=exc)
        restmetrics.LATENCY.labels(method=label).observe(time.perf_counter() - started)
        restmetrics.CALLS.labels(method=label, status=str(answer.status)).inc()
        return Exchange(portal, answer)
