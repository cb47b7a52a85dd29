"""The Bitrix24 REST client handlers get as `b24`: `AsyncB24` (the logic) and `B24` (sync).

Every request goes through, in order: the method's operating-time window (pause or defer),
the portal's OAuth tokens (refreshed single-flight when near expiry, in proportion to the
token's lifetime), the shared limiter (wait in place or defer), one HTTP exchange, and the
reaction to its answer, one layer per reason to go round again (see `_request`):

- success: feed the operating window; return `result`;
- 503 QUERY_LIMIT_EXCEEDED: the limiter treats the bucket as full, the request waits its turn
  again; 429 OPERATION_TIME_LIMIT: the method is held until its reset time;
- 401: re-read the stored pair and send again with it if another process replaced it; else
  on `expired_token` or `invalid_token` refresh once and send again;
- 3xx: a portal that moved; followed only once the authorization server confirms the new
  address (workers/rest/relocate.py);
- 5xx, connection errors, HTML error pages: bounded exponential backoff with jitter, when
  sending again is safe for what the call does (workers/rest/methodkind.py); a write that is not
  raises `WriteUncertain` at once;
- anything else: the typed error of workers/errors.py at once.

`v3(...)` calls REST 3.0 (`/rest/api/<method>`, JSON) through the same layers, with an
`Idempotency-Key` on every write, so lost answers of its writes are resent safely.

The sync client is a thin wrapper: it runs the same coroutines on this process's loop thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from shared import tracing
from shared.crypto import TokenCipher
from shared.keys import Keys
from shared.logs import security_event
from shared.oauth import OAuthClient
from shared.outbound import HostPolicy
from shared.portals import Portal
from shared.settings import ConfigError, Settings, require_token_keys
from workers.errors import ApiError, B24Error, BadRequest, OperatingLimit, RateLimited, WriteUncertain
from workers.guards.loop import EchoMarker
from workers.guards.writemap import Echo
from workers.rest import metrics as restmetrics
from workers.rest.methodkind import Kind, calls_kind, method_kind, resend_safe
from workers.rest.operating import OperatingWindow, report_from
from workers.rest.params import changed_fields
from workers.rest.query import BATCH_LIMIT, build_query, command
from workers.rest.ratelimit import Limiter, Plan, PlanError, parse_plan
from workers.rest.relocate import Relocator
from workers.rest.tokens import TokenStore, portal_hosts
from workers.rest.transport import (
    NOT_SENT,
    TIMED_OUT,
    Answer,
    Runtime,
    Transport,
    backoff,
    error_code,
    error_for,
    host_of,
)

MAX_ATTEMPTS = 5  # transient failures (5xx, connection, 503) before giving up to the worker's retry
AUTH_ROUNDS = 8  # 401s for pairs other processes replaced, before the job is retried later
BATCH_MAX = BATCH_LIMIT
PAGE = 50
_REFRESHABLE = frozenset({"expired_token", "invalid_token"})


@dataclass
class _Call:
    """One logical call on its way through the request layers."""

    method: str  # what limits, metrics and errors name ("batch" for a batch)
    params: dict[str, Any]
    methods: tuple[str, ...]  # the methods it runs (a batch's commands)
    batch: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None
    v3: bool = False
    idempotency_key: str | None = None
    echoes: list[Echo] | None = None  # marked once, before the first send
    writer: int | None = None


@dataclass(frozen=True)
class _Exchange:
    """What one send gave: the answer, or the transport error that lost it."""

    portal: Portal
    answer: Answer | None
    lost: ApiError | None = None


def v3_base(base: str) -> str:
    """REST 3.0's address for a v2 base: `/rest/` becomes `/rest/api/` (also in a webhook's
    `/rest/<user>/<secret>/`)."""
    head, sep, tail = base.rpartition("/rest/")
    if not sep:
        return base.rstrip("/") + "/api/"
    return f"{head}/rest/api/{tail}"


def _suffix(call: _Call) -> str:
    return "" if call.v3 else ".json"


def idempotency_key_for(origin: tuple[str, str], sequence: int) -> str:
    """The `Idempotency-Key` of a handler run's n-th REST 3.0 write: the same in every retry
    of the same (event, handler), so a write that had succeeded is answered from Bitrix24's
    store instead of being done again. Printable ASCII, well under 255 characters."""
    event_id, handler = origin
    digest = hashlib.sha256(f"{event_id}\x00{handler}\x00{sequence}".encode()).hexdigest()
    return f"b24pipe-{digest[:48]}"


@dataclass
class BatchResult:
    """A batch's per-command answers: `result[key]`, `errors[key]` (typed), totals and nexts."""

    result: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, B24Error] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    next: dict[str, int] = field(default_factory=dict)

    def raise_first(self) -> None:
        for error in self.errors.values():
            raise error


def php_keyed(value: Any) -> dict[str, Any]:
    """A batch answer's per-command part as a dict. PHP's json_encode writes an array whose
    keys are exactly 0..n-1 as a JSON list (commands named "0", "1", ... all answered), any
    other as an object, and an empty one as `[]`: the list's index is the command's key."""
    if isinstance(value, list):
        return {str(index): item for index, item in enumerate(value)}
    return dict(value) if isinstance(value, Mapping) else {}


@dataclass
class Context:
    """Everything one namespace's clients share inside one process."""

    settings: Settings
    runtime: Runtime
    keys: Keys
    tokens: TokenStore
    limiter: Limiter
    operating: OperatingWindow
    transport: Transport
    default_plan: Plan
    echoes: EchoMarker
    relocator: Relocator

    @classmethod
    async def build(cls, settings: Settings, runtime: Runtime) -> Context:
        try:
            plan = parse_plan(settings.rate_plan)
        except PlanError as exc:
            raise ConfigError(f"invalid setting B24PIPE_RATE_PLAN: {exc}") from None
        aredis = runtime.redis(settings.redis_url_or_default())
        keys = Keys(settings.namespace)
        transport = Transport(runtime.session, HostPolicy.from_settings(settings), settings.http_timeout)
        cipher = TokenCipher(require_token_keys(settings))
        oauth = OAuthClient(settings, runtime.session)
        tokens = TokenStore(settings, aredis, cipher, oauth)
        return cls(
            settings=settings,
            runtime=runtime,
            keys=keys,
            tokens=tokens,
            limiter=Limiter(aredis, keys, settings.rate_scope),
            operating=OperatingWindow(aredis, keys, settings.operating_pause_at),
            transport=transport,
            default_plan=plan,
            echoes=EchoMarker(aredis, settings),
            relocator=Relocator(settings, tokens, transport, oauth),
        )

    def plan_of(self, portal: Portal) -> Plan:
        if not portal.plan:
            return self.default_plan
        try:
            return parse_plan(portal.plan)
        except PlanError:
            return self.default_plan


_contexts: dict[tuple[int, str], Context] = {}
# Each Settings object's identity in `_contexts`, worked out once: a worker asks for the
# context of every handler run, and dumping the settings cost more than the rest of a
# no-op job's run. The object is kept with it, so its id is never reused for another.
_settings_keys: dict[int, tuple[Settings, str]] = {}


def context_for(settings: Settings) -> Context:
    runtime = Runtime.get()
    known = _settings_keys.get(id(settings))
    if known is None:
        known = _settings_keys[id(settings)] = (settings, repr(settings.model_dump()))
    key = (runtime.pid, known[1])
    ctx = _contexts.get(key)
    if ctx is None:
        ctx = runtime.run(Context.build(settings, runtime))
        _contexts[key] = ctx
    return ctx


class AsyncB24:
    """The REST client of one portal, for `async def` handlers (run on the process's loop)."""

    def __init__(self, ctx: Context, member_id: str, origin: tuple[str, str] | None = None) -> None:
        """`origin`: (event id, handler id) of the handler run this client serves; REST 3.0
        writes derive their idempotency keys from it."""
        self._ctx = ctx
        self.member_id = member_id
        self._origin = origin
        self._writes = 0  # REST 3.0 writes made so far in this handler run

    # --- public API --------------------------------------------------------------------
    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call one method; return its `result`."""
        return (await self._request(method, dict(params or {}), (method,)))["result"]

    async def v3(
        self, method: str, params: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> Any:
        """Call one REST 3.0 method (`/rest/api/<method>`, JSON); return its `result`.

        Every write carries an `Idempotency-Key`: `idempotency_key` when given, else one
        derived from (event id, handler, this write's number in the handler run), so a
        retried handler sends the same keys and Bitrix24 does not repeat writes that had
        succeeded. A write whose answer was lost is therefore sent again."""
        key = idempotency_key
        if key is None and method_kind(method) is not Kind.READ:
            self._writes += 1
            key = (
                idempotency_key_for(self._origin, self._writes)
                if self._origin
                else f"b24pipe-{uuid.uuid4().hex}"
            )
        payload = await self._request(method, dict(params or {}), (method,), v3=True, idempotency_key=key)
        return payload["result"]

    async def batch(
        self,
        commands: Mapping[str, tuple[str, Mapping[str, Any]]] | Sequence[tuple[str, Mapping[str, Any]]],
        halt: bool = False,
    ) -> BatchResult:
        """Up to 50 commands in one request (one limiter slot). Keys of a sequence are 0, 1, ..."""
        named = (
            dict(commands) if isinstance(commands, Mapping) else {str(i): c for i, c in enumerate(commands)}
        )
        if len(named) > BATCH_MAX:
            raise BadRequest("ERROR_BATCH_LENGTH_EXCEEDED", f"{len(named)} commands, at most {BATCH_MAX}")
        cmd = {key: command(method, params) for key, (method, params) in named.items()}
        methods = tuple(sorted({method for method, _ in named.values()}))
        payload = await self._request("batch", {"halt": int(halt), "cmd": cmd}, methods, named)
        body = payload.get("result")
        body = body if isinstance(body, Mapping) else {}
        out = BatchResult(
            result=php_keyed(body.get("result")),
            total={k: int(v) for k, v in php_keyed(body.get("result_total")).items()},
            next={k: int(v) for k, v in php_keyed(body.get("result_next")).items()},
        )
        for key, error in php_keyed(body.get("result_error")).items():
            method = named[key][0] if key in named else "batch"
            out.errors[key] = error_for(Answer(400, error if isinstance(error, dict) else {}), method)
        return out

    async def call_many(self, method: str, params_list: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Call one method for each params, 50 per batch (each batch one request against the
        rate limit); results in order. The first failed command's typed error is raised."""
        results: list[Any] = []
        for start in range(0, len(params_list), BATCH_MAX):
            keys = [f"c{i}" for i in range(start, min(start + BATCH_MAX, len(params_list)))]
            answer = await self.batch({key: (method, params_list[int(key[1:])]) for key in keys})
            answer.raise_first()
            results.extend(answer.result.get(key) for key in keys)
        return results

    async def list(
        self, method: str, params: Mapping[str, Any] | None = None, *, by_id: bool = False
    ) -> list[Any]:
        """Every item of a list method. `by_id=True` walks large lists the fast way:
        `order[ID]=ASC`, `filter[>ID]=<last>`, `start=-1` (no count)."""
        base = dict(params or {})
        items: list[Any] = []
        if by_id:
            last = 0
            while True:
                query = {
                    **base,
                    "order": {"ID": "ASC"},
                    "filter": {**dict(base.get("filter") or {}), ">ID": last},
                    "start": -1,
                }
                page = _items((await self._request(method, query, (method,)))["result"])
                items.extend(page)
                if len(page) < PAGE:
                    return items
                last = int(page[-1].get("ID") or page[-1].get("id"))
        start = 0
        while True:
            payload = await self._request(method, {**base, "start": start}, (method,))
            items.extend(_items(payload["result"]))
            if payload.get("next") is None:
                return items
            start = int(payload["next"])

    async def update_if_changed(
        self, entity: str, entity_id: int | str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Read `<entity>.get`, write `<entity>.update` with only the fields that differ.
        Returns the fields written (empty: nothing changed, no write, no echo event)."""
        current = await self.call(f"{entity}.get", {"id": entity_id})
        changed = changed_fields(current if isinstance(current, dict) else {}, fields)
        if changed:
            await self.call(f"{entity}.update", {"id": entity_id, "fields": changed})
        return changed

    # --- one request with everything around it -------------------------------------------
    # Layers, outermost first, each with one reason to go round again: `_request` (echo marks
    # and the answer's bookkeeping), `_resending` (transient failures, by method kind),
    # `_relocating` (a portal that moved), `_authorized` (tokens rotated or expired),
    # `_limited` (operating window, shared limiter, Bitrix24's own limits), `_send` (one
    # HTTP exchange).
    async def _request(
        self,
        method: str,
        params: dict[str, Any],
        methods: tuple[str, ...],
        batch: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
        *,
        v3: bool = False,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        call = _Call(method, params, methods, batch, v3, idempotency_key)
        if not tracing.enabled():
            return await self._request_once(call)
        # one span per REST call (waits, refreshes and retries inside it); never the URL,
        # params or answer: a webhook URL is a secret and data is the portal's
        attributes = {"rpc.system": "bitrix24", "rpc.method": method, "b24pipe.member_id": self.member_id}
        with tracing.span(f"b24 {method}", attributes, kind="client"):
            return await self._request_once(call)

    async def _request_once(self, call: _Call) -> dict[str, Any]:
        ctx = self._ctx
        try:
            exchange = await self._resending(call)
        except B24Error:
            # Even when the write may have run (WriteUncertain): a mark kept for an echo that
            # never comes would swallow a person's next change of the entity; an echo that
            # does come unmarked only runs a handler once more (the loop breaker bounds it).
            await ctx.echoes.release(self.member_id, call.writer, call.echoes or [])
            raise
        payload = exchange.answer.payload if exchange.answer else None
        assert payload is not None
        await self._record_operating(call.method, payload, call.batch)
        if call.batch is not None and call.echoes:  # refused commands, or not run after a halt
            ran = php_keyed((payload.get("result") or {}).get("result"))
            await ctx.echoes.release_calls(
                self.member_id, call.writer, [c for k, c in call.batch.items() if k not in ran]
            )
        return payload

    async def _resending(self, call: _Call) -> _Exchange:
        """Send again after a transient failure (5xx, HTML page, lost connection), with
        backoff, only when that is safe for what the call does (workers.rest.methodkind)."""
        kind = calls_kind(call.methods)
        attempts = 0
        while True:
            exchange = await self._relocating(call)
            answer = exchange.answer
            if answer is None:
                assert exchange.lost is not None
                error: B24Error = exchange.lost
            elif error_code(answer) is None:
                return exchange
            else:
                error = error_for(answer, call.method)
            if error.code == "OVERLOAD_LIMIT":
                security_event("limit_hit", member_id=self.member_id, method=call.method, code=error.code)
            if not error.retryable or error.code == "OVERLOAD_LIMIT":
                raise error
            if error.code != NOT_SENT and not resend_safe(kind, call.idempotency_key is not None):
                restmetrics.UNCERTAIN_WRITES.labels(method=restmetrics.method_label(call.method)).inc()
                raise WriteUncertain(
                    error.code,
                    "the write may or may not have happened",
                    method=call.method,
                    status=error.status,
                )
            attempts += 1
            if attempts >= MAX_ATTEMPTS:
                raise error
            delay = backoff(attempts)
            if error.code == TIMED_OUT and call.idempotency_key:
                # The timed-out request may still be running, and Bitrix24 runs two requests
                # with one key at the same moment both: give the first its time to finish.
                delay = max(delay, self._ctx.settings.http_timeout)
            await asyncio.sleep(delay)

    async def _relocating(self, call: _Call) -> _Exchange:
        """Follow a portal's move once, after the authorization server confirmed it."""
        moved = False
        while True:
            exchange = await self._authorized(call)
            if exchange.answer is None or not exchange.answer.location:
                return exchange
            if moved:
                raise ApiError("TOO_MANY_REDIRECTS", method=call.method)
            moved = True
            # the redirect names `<endpoint>api/<method>` for REST 3.0: the endpoint is before "api/"
            target = f"api/{call.method}" if call.v3 else call.method
            await self._ctx.relocator.follow(exchange.portal, exchange.answer.location, target)

    async def _authorized(self, call: _Call) -> _Exchange:
        """Send with the portal's current pair. A 401 for a pair another process has replaced
        is sent again with the new one, however often that happens within AUTH_ROUNDS; one
        the stored pair gets is cured by one refresh (which raises `ReauthRequired` only when
        the latest refresh token is refused). A 401 for a pair just refreshed is final."""
        tokens = self._ctx.tokens
        cured = False
        for _ in range(AUTH_ROUNDS):
            portal = await tokens.fresh(self.member_id)
            exchange = await self._limited(call, portal)
            answer = exchange.answer
            if answer is None or answer.status != 401 or portal.webhook_url:
                return exchange
            current = await tokens.load(self.member_id)
            if current.token_gen != portal.token_gen:
                continue  # rotated by another process meanwhile: the current pair is the answer
            if cured or error_code(answer) not in _REFRESHABLE:
                return exchange
            await tokens.refresh(portal)
            cured = True
        raise ApiError("AUTH_CHURN", "the portal's tokens kept changing during the call", method=call.method)

    async def _limited(self, call: _Call, portal: Portal) -> _Exchange:
        """Wait for the methods' operating window and the shared limiter, then send; a request
        Bitrix24 refused for its limits (not run) waits its turn again."""
        ctx = self._ctx
        max_wait = ctx.settings.max_inplace_wait
        refusals = 0
        while True:
            for name in call.methods:
                pause = await ctx.operating.pause(self.member_id, name)
                if pause > max_wait:
                    restmetrics.DEFERRED.labels(reason="operating").inc()
                    raise OperatingLimit(pause, method=name)
                if pause > 0:
                    await asyncio.sleep(pause)
            plan = ctx.plan_of(portal)
            try:
                waited = await ctx.limiter.acquire(self.member_id, plan, max_wait)
            except RateLimited as exc:
                restmetrics.DEFERRED.labels(reason="rate").inc()
                raise RateLimited(exc.after, method=call.method) from None
            restmetrics.LIMITER_WAIT.observe(waited)
            exchange = await self._send(call, portal)
            if exchange.answer is None:
                return exchange
            code = error_code(exchange.answer)
            if exchange.answer.status == 503:
                restmetrics.LIMIT_503.labels(
                    code="QUERY_LIMIT_EXCEEDED" if code == "QUERY_LIMIT_EXCEEDED" else "other"
                ).inc()
            if code == "QUERY_LIMIT_EXCEEDED":
                security_event("limit_hit", member_id=self.member_id, method=call.method, code=code)
                await ctx.limiter.saturate(self.member_id, plan)
                refusals += 1
                if refusals >= MAX_ATTEMPTS:
                    raise RateLimited(1 / plan.drain, method=call.method)
                continue
            if code == "OPERATION_TIME_LIMIT":
                security_event("limit_hit", member_id=self.member_id, method=call.method, code=code)
                for name in call.methods:
                    await ctx.operating.blocked(self.member_id, name, time.time() + 60)
                continue
            return exchange

    async def _send(self, call: _Call, portal: Portal) -> _Exchange:
        """One HTTP exchange. A transport failure comes back as `lost`, not raised: only
        `_resending` knows whether the call may be sent again."""
        ctx = self._ctx
        url, body, hosts = self._prepare(portal, call)
        if call.echoes is None:  # marked before the write is sent: its echo may beat the answer
            call.writer = portal.user_id or None
            call.echoes = await ctx.echoes.mark(self.member_id, call.writer, call.method, call.params)
        headers = {"Idempotency-Key": call.idempotency_key} if call.idempotency_key else None
        label = restmetrics.method_label(call.method)
        started = time.perf_counter()
        try:
            answer = await ctx.transport.post(
                url, json=body, headers=headers, portal_hosts=hosts, method=call.method, follow=False
            )
        except ApiError as exc:
            restmetrics.CALLS.labels(method=label, status="error").inc()
            return _Exchange(portal, None, lost=exc)
        restmetrics.LATENCY.labels(method=label).observe(time.perf_counter() - started)
        restmetrics.CALLS.labels(method=label, status=str(answer.status)).inc()
        return _Exchange(portal, answer)

    def _prepare(self, portal: Portal, call: _Call) -> tuple[str, dict[str, Any], tuple[str, ...]]:
        """URL, JSON body and allowed hosts. The token goes in the body, never in the URL."""
        cipher = self._ctx.tokens.cipher
        params = self._connected(portal, call.method, call.params)
        if portal.webhook_url:
            base = portal.open_webhook(cipher)
            if call.v3:
                base = v3_base(base)
            return (
                f"{base.rstrip('/')}/{call.method}{_suffix(call)}",
                params,
                (*portal_hosts(portal), host_of(base)),
            )
        endpoint = portal.client_endpoint or f"https://{portal.domain}/rest/"
        if call.v3:
            endpoint = v3_base(endpoint)
        body = {**params, "auth": portal.open_access(cipher)}
        return f"{endpoint.rstrip('/')}/{call.method}{_suffix(call)}", body, portal_hosts(portal)

    def _connected(self, portal: Portal, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Writes of a portal with an `auth_connector` carry it (each write command of a batch
        too): Bitrix24 then leaves them out of the offline-event queue bound with the same one."""
        connector = portal.auth_connector
        writes = self._ctx.echoes
        if not connector or not writes.is_write(method):
            return params
        suffix = build_query({"auth_connector": connector})
        if method.strip().lower() != "batch":
            return {**params, "auth_connector": connector}
        cmd = {
            key: f"{text}{'&' if '?' in text else '?'}{suffix}"
            if isinstance(text, str) and writes.is_write(text.partition("?")[0])
            else text
            for key, text in dict(params.get("cmd") or {}).items()
        }
        return {**params, "cmd": cmd}

    async def _record_operating(
        self, method: str, payload: dict[str, Any], batch: Mapping[str, tuple[str, Mapping[str, Any]]] | None
    ) -> None:
        ctx = self._ctx
        if batch is None:
            report = report_from(payload.get("time"), time.time())
            if report is not None:
                await ctx.operating.record(self.member_id, method, report)
            return
        times = php_keyed((payload.get("result") or {}).get("result_time"))
        for key, block in times.items():
            report = report_from(block, time.time())
            if key in batch and report is not None:
                await ctx.operating.record(self.member_id, batch[key][0], report)


def _items(result: Any) -> list[Any]:
    """A list page's items: the result itself, or the one list inside it (`{"tasks": [...]}`)."""
    if isinstance(result, list):
        return result
    if isinstance(result, dict):
        lists = [value for value in result.values() if isinstance(value, list)]
        if len(lists) == 1:
            return lists[0]
    return []


class B24:
    """The sync client handlers get: the same logic as AsyncB24, run on the loop thread."""

    def __init__(self, ctx: Context, member_id: str, origin: tuple[str, str] | None = None) -> None:
        self._run = ctx.runtime.run
        self.aio = AsyncB24(ctx, member_id, origin)
        self.member_id = member_id

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._run(self.aio.call(method, params))

    def v3(
        self, method: str, params: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> Any:
        return self._run(self.aio.v3(method, params, idempotency_key=idempotency_key))

    def batch(
        self,
        commands: Mapping[str, tuple[str, Mapping[str, Any]]] | Sequence[tuple[str, Mapping[str, Any]]],
        halt: bool = False,
    ) -> BatchResult:
        return self._run(self.aio.batch(commands, halt))

    def call_many(self, method: str, params_list: Sequence[Mapping[str, Any]]) -> list[Any]:
        return self._run(self.aio.call_many(method, params_list))

    def list(self, method: str, params: Mapping[str, Any] | None = None, *, by_id: bool = False) -> list[Any]:
        return self._run(self.aio.list(method, params, by_id=by_id))

    def update_if_changed(
        self, entity: str, entity_id: int | str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self._run(self.aio.update_if_changed(entity, entity_id, fields))


def client_for(
    settings: Settings, redis: redis.Redis | None, member_id: str, origin: tuple[str, str] | None = None
) -> B24:
    """The sync client of one portal (the workers' seam). `redis` is the worker's sync
    connection; the client talks to the same `REDIS_URL` through its own asyncio pool.
    `origin`: (event id, handler id) of the handler run it serves (idempotency keys)."""
    return B24(context_for(settings), member_id, origin)


def async_client_for(
    settings: Settings, redis: redis.Redis | None, member_id: str, origin: tuple[str, str] | None = None
) -> AsyncB24:
    """The async client of one portal. Await it only on the loop `run_async` uses."""
    return AsyncB24(context_for(settings), member_id, origin)


def run_async(settings: Settings, coro: Any) -> Any:
    """Run an async handler's coroutine on the loop the clients live on, and wait for it."""
    return context_for(settings).runtime.run(coro)
