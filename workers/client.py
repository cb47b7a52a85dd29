"""The Bitrix24 REST client handlers get as `b24`: `AsyncB24` (the logic) and `B24` (sync).

Every request goes through, in order: the method's operating-time window (pause or defer),
the portal's OAuth tokens (refreshed single-flight when near expiry), the shared limiter
(wait in place or defer), one HTTP exchange, and the reaction to its answer:

- success: feed the operating window; return `result`;
- 503 QUERY_LIMIT_EXCEEDED: the limiter treats the bucket as full, the request waits its turn
  again; 429 OPERATION_TIME_LIMIT: the method is held until its reset time;
- 401: re-read the stored pair and retry if another process changed it; on `expired_token`
  (or `invalid_token`) refresh once and retry once;
- 3xx: a portal that moved; followed only once the authorization server confirms the new
  address (workers/relocate.py);
- 5xx, connection errors, HTML error pages: bounded exponential backoff with jitter;
- anything else: the typed error of workers/errors.py at once.

The sync client is a thin wrapper: it runs the same coroutines on this process's loop thread.
"""

from __future__ import annotations

import asyncio
import time
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
from workers import restmetrics
from workers.batching import BATCH_LIMIT, build_query, command
from workers.errors import ApiError, B24Error, BadRequest, OperatingLimit, RateLimited
from workers.guards import EchoMarker
from workers.operating import OperatingWindow, report_from
from workers.params import changed_fields
from workers.ratelimit import Limiter, Plan, PlanError, parse_plan
from workers.relocate import Relocator
from workers.tokens import TokenStore, portal_hosts
from workers.transport import Answer, Runtime, Transport, backoff, error_code, error_for, host_of
from workers.writemap import Echo

MAX_ATTEMPTS = 5  # transient failures (5xx, connection, 503) before giving up to the worker's retry
BATCH_MAX = BATCH_LIMIT
PAGE = 50
_REFRESHABLE = frozenset({"expired_token", "invalid_token"})


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
        tokens = TokenStore(settings, aredis, cipher, transport)
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
            relocator=Relocator(settings, tokens, transport, OAuthClient(settings, runtime.session)),
        )

    def plan_of(self, portal: Portal) -> Plan:
        if not portal.plan:
            return self.default_plan
        try:
            return parse_plan(portal.plan)
        except PlanError:
            return self.default_plan


_contexts: dict[tuple[int, str], Context] = {}


def context_for(settings: Settings) -> Context:
    runtime = Runtime.get()
    key = (runtime.pid, repr(settings.model_dump()))
    ctx = _contexts.get(key)
    if ctx is None:
        ctx = runtime.run(Context.build(settings, runtime))
        _contexts[key] = ctx
    return ctx


class AsyncB24:
    """The REST client of one portal, for `async def` handlers (run on the process's loop)."""

    def __init__(self, ctx: Context, member_id: str) -> None:
        self._ctx = ctx
        self.member_id = member_id

    # --- public API --------------------------------------------------------------------
    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call one method; return its `result`."""
        return (await self._request(method, dict(params or {}), (method,)))["result"]

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
    async def _request(
        self,
        method: str,
        params: dict[str, Any],
        methods: tuple[str, ...],
        batch: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    ) -> dict[str, Any]:
        if not tracing.enabled():
            return await self._request_once(method, params, methods, batch)
        # one span per REST call (waits, refreshes and retries inside it); never the URL,
        # params or answer: a webhook URL is a secret and data is the portal's
        attributes = {"rpc.system": "bitrix24", "rpc.method": method, "b24pipe.member_id": self.member_id}
        with tracing.span(f"b24 {method}", attributes, kind="client"):
            return await self._request_once(method, params, methods, batch)

    async def _request_once(
        self,
        method: str,
        params: dict[str, Any],
        methods: tuple[str, ...],
        batch: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    ) -> dict[str, Any]:
        ctx = self._ctx
        max_wait = ctx.settings.max_inplace_wait
        transient = 0
        rereads = 0
        refreshed = False
        moves = 0
        echoes: list[Echo] | None = None
        while True:
            for name in methods:
                pause = await ctx.operating.pause(self.member_id, name)
                if pause > max_wait:
                    restmetrics.DEFERRED.labels(reason="operating").inc()
                    raise OperatingLimit(pause, method=name)
                if pause > 0:
                    await asyncio.sleep(pause)
            portal = await ctx.tokens.fresh(self.member_id)
            plan = ctx.plan_of(portal)
            try:
                waited = await ctx.limiter.acquire(self.member_id, plan, max_wait)
            except RateLimited as exc:
                restmetrics.DEFERRED.labels(reason="rate").inc()
                raise RateLimited(exc.after, method=method) from None
            restmetrics.LIMITER_WAIT.observe(waited)
            url, body, hosts = self._prepare(portal, method, params)
            if echoes is None:  # marked before the write is sent: its echo may beat the answer
                echoes = await ctx.echoes.mark(self.member_id, portal.user_id or None, method, params)
            label = restmetrics.method_label(method)
            started = time.perf_counter()
            try:
                answer = await ctx.transport.post(
                    url, json=body, portal_hosts=hosts, method=method, follow=False
                )
            except ApiError:
                restmetrics.CALLS.labels(method=label, status="error").inc()
                transient += 1
                if transient >= MAX_ATTEMPTS:
                    raise
                await asyncio.sleep(backoff(transient))
                continue
            restmetrics.LATENCY.labels(method=label).observe(time.perf_counter() - started)
            restmetrics.CALLS.labels(method=label, status=str(answer.status)).inc()
            if answer.location:
                moves += 1
                if moves > 1:
                    raise ApiError("TOO_MANY_REDIRECTS", method=method)
                await ctx.relocator.follow(portal, answer.location, method)
                continue
            code = error_code(answer)
            if code is None:
                assert answer.payload is not None
                await self._record_operating(method, answer.payload, batch)
                if batch is not None and echoes:  # refused commands, or not run after a halt
                    ran = php_keyed((answer.payload.get("result") or {}).get("result"))
                    await ctx.echoes.release_calls(
                        self.member_id, portal.user_id or None, [c for k, c in batch.items() if k not in ran]
                    )
                return answer.payload
            if answer.status == 503:
                restmetrics.LIMIT_503.labels(
                    code="QUERY_LIMIT_EXCEEDED" if code == "QUERY_LIMIT_EXCEEDED" else "other"
                ).inc()
            if code == "QUERY_LIMIT_EXCEEDED":
                security_event("limit_hit", member_id=self.member_id, method=method, code=code)
                await ctx.limiter.saturate(self.member_id, plan)
                transient += 1
                if transient >= MAX_ATTEMPTS:
                    raise RateLimited(1 / plan.drain, method=method)
                continue
            if code == "OPERATION_TIME_LIMIT":
                security_event("limit_hit", member_id=self.member_id, method=method, code=code)
                for name in methods:
                    await ctx.operating.blocked(self.member_id, name, time.time() + 60)
                continue
            if answer.status == 401 and not portal.webhook_url:
                current = await ctx.tokens.load(self.member_id)
                if current.token_gen != portal.token_gen and rereads < 2:
                    rereads += 1
                    continue
                if code in _REFRESHABLE and not refreshed:
                    refreshed = True
                    await ctx.tokens.refresh(portal)
                    continue
            error = error_for(answer, method)
            if error.retryable and code != "OVERLOAD_LIMIT":
                transient += 1
                if transient < MAX_ATTEMPTS:
                    await asyncio.sleep(backoff(transient))
                    continue
            if code == "OVERLOAD_LIMIT":
                security_event("limit_hit", member_id=self.member_id, method=method, code=code)
            await ctx.echoes.release(self.member_id, portal.user_id or None, echoes or [])
            raise error

    def _prepare(
        self, portal: Portal, method: str, params: dict[str, Any]
    ) -> tuple[str, dict[str, Any], tuple[str, ...]]:
        """URL, JSON body and allowed hosts. The token goes in the body, never in the URL."""
        cipher = self._ctx.tokens.cipher
        params = self._connected(portal, method, params)
        if portal.webhook_url:
            base = portal.open_webhook(cipher)
            return f"{base.rstrip('/')}/{method}.json", params, (*portal_hosts(portal), host_of(base))
        endpoint = portal.client_endpoint or f"https://{portal.domain}/rest/"
        body = {**params, "auth": portal.open_access(cipher)}
        return f"{endpoint.rstrip('/')}/{method}.json", body, portal_hosts(portal)

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

    def __init__(self, ctx: Context, member_id: str) -> None:
        self._run = ctx.runtime.run
        self.aio = AsyncB24(ctx, member_id)
        self.member_id = member_id

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._run(self.aio.call(method, params))

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


def client_for(settings: Settings, redis: redis.Redis | None, member_id: str) -> B24:
    """The sync client of one portal (the workers' seam). `redis` is the worker's sync
    connection; the client talks to the same `REDIS_URL` through its own asyncio pool."""
    return B24(context_for(settings), member_id)


def async_client_for(settings: Settings, redis: redis.Redis | None, member_id: str) -> AsyncB24:
    """The async client of one portal. Await it only on the loop `run_async` uses."""
    return AsyncB24(context_for(settings), member_id)


def run_async(settings: Settings, coro: Any) -> Any:
    """Run an async handler's coroutine on the loop the clients live on, and wait for it."""
    return context_for(settings).runtime.run(coro)
