"""The Bitrix24 REST client handlers get as `b24`: `AsyncB24` (the logic) and `B24` (sync).

Every call goes down one request path, chained in `Context` and drawn in the docstring of
workers/rest/layers.py: echo marks, resending by what the method does, a portal that moved,
the portal's tokens, the methods' operating windows, the shared limiter, one HTTP exchange;
one layer for each reason to send a call again. A handler gets the `result`, or the typed
error of workers/errors.py.

`v3(...)` calls REST 3.0 (`/rest/api/<method>`, JSON) through the same layers, with an
`Idempotency-Key` on every write, so lost answers of its writes are resent safely.

The sync client is a thin wrapper: it runs the same coroutines on this process's loop thread.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from shared import tracing
from shared.crypto import TokenCipher
from shared.errors import ConfigurationError
from shared.keys import Keys
from shared.oauth import OAuthClient
from shared.outbound import HostPolicy
from shared.settings import Settings, require_token_keys
from workers.errors import B24Error, BadRequest
from workers.guards.loop import EchoMarker
from workers.rest.layers import (
    Authorizing,
    Call,
    EchoMarking,
    EchoSettling,
    Layer,
    Limiting,
    Operating,
    Relocating,
    Resending,
    Sending,
)
from workers.rest.methodkind import Kind, method_kind
from workers.rest.operating import OperatingWindow
from workers.rest.params import changed_fields
from workers.rest.query import BATCH_LIMIT, command
from workers.rest.ratelimit import Limiter, PlanError, RatePlan, parse_plan
from workers.rest.relocate import Relocator
from workers.rest.tokens import TokenStore
from workers.rest.transport import Answer, Runtime, Transport, error_for, php_keyed

BATCH_MAX = BATCH_LIMIT
PAGE = 50


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
    default_plan: RatePlan
    echoes: EchoMarker
    relocator: Relocator
    path: Layer = field(init=False)  # the request path, built from the parts above

    def __post_init__(self) -> None:
        max_wait = self.settings.max_inplace_wait
        # outermost first, as workers/rest/layers.py draws them
        self.path = EchoSettling(
            self.echoes,
            Resending(
                self.settings.http_timeout,
                Relocating(
                    self.relocator,
                    Authorizing(
                        self.tokens,
                        Operating(
                            self.operating,
                            max_wait,
                            Limiting(
                                self.limiter,
                                self.default_plan,
                                max_wait,
                                EchoMarking(
                                    self.echoes,
                                    Sending(self.transport, self.tokens.cipher, self.echoes.is_write),
                                ),
                            ),
                        ),
                    ),
                ),
            ),
        )

    @classmethod
    async def build(cls, settings: Settings, runtime: Runtime) -> Context:
        try:
            plan = parse_plan(settings.rate_plan)
        except PlanError as exc:
            raise ConfigurationError(f"invalid setting B24PIPE_RATE_PLAN: {exc}") from None
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

    # --- one request: the layers of workers/rest/layers.py -----------------------------------
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
        """Send one call down the request path; return the answer's JSON object."""
        call = Call(self.member_id, method, params, methods, batch, v3, idempotency_key)
        if not tracing.enabled():
            return (await self._ctx.path.send(call)).payload
        # one span per REST call (waits, refreshes and retries inside it); never the URL,
        # params or answer: a webhook URL is a secret and data is the portal's
        attributes = {"rpc.system": "bitrix24", "rpc.method": method, "b24pipe.member_id": self.member_id}
        with tracing.span(f"b24 {method}", attributes, kind="client"):
            return (await self._ctx.path.send(call)).payload


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
