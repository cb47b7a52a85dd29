"""The portal's REST endpoints: `/p/<domain>/rest/<method>.json` and REST 3.0's
`/p/<domain>/rest/api/<method>` (JSON only, errors as `{error: {code, message}}`, results in
v3's shape, `Idempotency-Key` answered from idempotency.py's store).

Order of checks, as on Bitrix24: the portal's address (a renamed portal answers 302 to its
new one), injected faults, the leaky bucket (503 QUERY_LIMIT_EXCEEDED, auth or not), the
token (401 NO_AUTH_FOUND / invalid_token / expired_token), the method (404), its scope
(403 insufficient_scope), its operating time (429 OPERATION_TIME_LIMIT). Writes' events are
sent after the answer, or before it when the portal's `echo_before_answer` fault is on. A
lost-answer fault (faults.py) drops the connection after all of that.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from b24pipe.sim import errors, eventapi  # noqa: F401  (eventapi registers event.* methods)
from b24pipe.sim.batch import run_batch
from b24pipe.sim.errors import RestError
from b24pipe.sim.events import change_deliveries, test_deliveries
from b24pipe.sim.idempotency import IdempotencyStore, Stored, digest_of, valid_key
from b24pipe.sim.methods import Answer, Call, lookup
from b24pipe.sim.oauth import AccessGrant
from b24pipe.sim.phpform import parse_str
from b24pipe.sim.portal import Portal
from b24pipe.sim.state import Simulator
from b24pipe.sim.timeblock import time_block

SIM: web.AppKey[Simulator] = web.AppKey("simulator", Simulator)
IDEMPOTENCY: web.AppKey[IdempotencyStore] = web.AppKey("idempotency", IdempotencyStore)
HTML_PAGE = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def read_params(request: web.Request) -> dict[str, Any]:
    """Query string plus a form or JSON body, bracket keys nested as PHP does."""
    params: dict[str, Any] = parse_str(request.query_string)
    raw = await request.read()
    if raw:
        if request.content_type == "application/json":
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise RestError(400, "INVALID_REQUEST", "Body is not valid JSON") from None
            if not isinstance(body, dict):
                raise RestError(400, "INVALID_REQUEST", "JSON body must be an object")
            params |= body
        else:
            params |= parse_str(raw.decode("utf-8", "replace"))
    return params


def bearer_or_field(request: web.Request, params: dict[str, Any]) -> str | None:
    token = params.pop("auth", None)
    header = request.headers.get("Authorization", "")
    if not token and header.lower().startswith("bearer "):
        token = header[7:].strip()
    return str(token) if token else None


def authenticate(sim: Simulator, portal: Portal, token: str | None) -> AccessGrant:
    if not token:
        raise errors.no_auth()
    grant = sim.tokens.access.get(token)
    if grant is None or grant.member_id != portal.member_id or not portal.installed:
        raise errors.invalid_token()
    if grant.expires_at <= portal.clock.time():
        raise errors.expired_token()
    return grant


def webhook_user(portal: Portal, user: str, secret: str) -> int:
    """Inbound webhooks authenticate by the path; a wrong pair is invalid_token, as on Bitrix24."""
    user_id = portal.webhooks.get(secret)
    if user_id is None or str(user_id) != user:
        raise errors.invalid_token()
    return user_id


def execute(name: str, call: Call) -> Answer:
    """Run one method (also each command of a batch) with its scope and operating-time checks."""
    portal = call.portal
    scope, fn = lookup(name)
    if scope and scope not in portal.scope:
        raise errors.insufficient_scope()
    now = portal.clock.time()
    if portal.operating.blocked(name, now):
        raise errors.operation_time_limit()
    try:
        return fn(call)
    finally:
        portal.operating.charge(name, now, portal.operating.cost(name))


def _drop(request: web.Request) -> web.Response:
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)


async def handle(request: web.Request) -> web.StreamResponse:
    """REST v2: `/rest/<method>.json`, form or JSON bodies."""
    return await serve(request, v3=False)


async def handle_v3(request: web.Request) -> web.StreamResponse:
    """REST 3.0: `/rest/api/<method>`, JSON only, `{error: {code, message}}`, Idempotency-Key."""
    return await serve(request, v3=True)


def v3_result(method: str, result: Any) -> Any:
    """A v2 method's result in REST 3.0's dress: objects as they are, lists as `items`, a
    created id as `item.id`, other values as `result`."""
    if isinstance(result, dict):
        return result
    if isinstance(result, list):
        return {"items": result}
    if method.endswith(".add") and isinstance(result, int | str) and not isinstance(result, bool):
        return {"item": {"id": result}}
    return {"result": result}


def v3_error(exc: RestError) -> dict[str, Any]:
    return {"error": {"code": exc.code, "message": exc.description}}


async def serve(request: web.Request, *, v3: bool) -> web.StreamResponse:
    sim = request.app[SIM]
    domain, name = request.match_info["domain"], request.match_info["method"]
    portal = sim.domains.get(domain)
    if portal is None:
        return web.Response(
            status=404, text="<html><body>Portal not found</body></html>", content_type="text/html"
        )
    if portal.domain != domain:
        query = f"?{request.query_string}" if request.query_string else ""
        raise web.HTTPFound(f"{portal.client_endpoint}{'api/' if v3 else ''}{name}{query}")
    method = name.lower().removesuffix(".json")
    portal.stats.requests[method] += 1
    bad_params: RestError | None = None
    try:
        if v3 and request.can_read_body and request.content_type != "application/json":
            raise RestError(400, "INVALID_REQUEST", "REST 3.0 takes JSON bodies only")
        params = await read_params(request)  # before any delay: the body is read while the client waits
    except RestError as exc:
        params, bad_params = {}, exc
    key = request.headers.get("Idempotency-Key") if v3 else None
    fault = portal.faults.take_rest_fault(method)
    if portal.faults.rest_delay:
        await asyncio.sleep(portal.faults.rest_delay)
    if fault == "drop":
        return _drop(request)
    slow = portal.faults.slow(method)
    if slow and portal.faults.rest_stall:
        await asyncio.sleep(portal.faults.rest_stall)
        if request.transport is None or request.transport.is_closing():
            return web.Response(status=499)  # the caller left before the server ran its call
    if fault == "html":
        portal.stats.statuses["502"] += 1
        return web.Response(status=502, text=HTML_PAGE, content_type="text/html")
    start = portal.clock.time()
    call = Call(portal, 0, params)
    status: int = 200
    body: dict[str, Any] = {}
    replay: Stored | None = None
    owner: tuple[str, int, str, str] | None = None
    try:
        if fault == "500":
            raise RestError(500, "INTERNAL_SERVER_ERROR", "Internal server error")
        if bad_params is not None:
            raise bad_params
        if key is not None and not valid_key(key):
            raise RestError(
                400, "INVALID_REQUEST", "Idempotency-Key must be 1-255 printable ASCII characters"
            )
        if not portal.bucket.try_take(portal.clock.monotonic()):
            raise errors.query_limit()
        if "secret" in request.match_info:
            call.user_id = webhook_user(portal, request.match_info["user"], request.match_info["secret"])
        else:
            call.user_id = authenticate(sim, portal, bearer_or_field(request, call.params)).user_id
        if key is not None:
            owner = (portal.member_id, call.user_id, method, key)
            replay = request.app[IDEMPOTENCY].lookup(owner, portal.clock.time())
            if replay is not None and replay.digest != digest_of(call.params):
                raise RestError(422, "IDEMPOTENCY_KEY_REUSED", "Idempotency-Key was used with another body")
        if replay is not None:
            portal.stats.idempotent_replays += 1
            status, body = replay.status, dict(replay.body)
        else:
            if portal.faults.rest_slow:
                await asyncio.sleep(portal.faults.rest_slow)
            answer = run_batch(call, execute) if method == "batch" else execute(method, call)
            body = {"result": v3_result(method, answer.result) if v3 else answer.result}
            if answer.next is not None:
                body["next"] = answer.next
            if answer.total is not None:
                body["total"] = answer.total
    except RestError as exc:
        status, body = exc.status, v3_error(exc) if v3 else dict(exc.body())
        portal.stats.errors[exc.code or "(empty)"] += 1
    if owner is not None and replay is None and status not in (401, 422, 429, 503) and status < 500:
        request.app[IDEMPOTENCY].keep(
            owner, Stored(digest_of(call.params), status, dict(body), portal.clock.time())
        )
    portal.stats.statuses[str(status)] += 1
    body["time"] = time_block(portal, method, start, portal.operating.cost(method))
    if slow and portal.faults.rest_hold:
        await asyncio.sleep(portal.faults.rest_hold)  # the call ran; its answer waits
    outgoing = [item for change in call.changes for item in change_deliveries(portal, sim.tokens, change)]
    outgoing += [item for query in call.tests for item in test_deliveries(portal, query)]
    if outgoing and portal.faults.echo_before_answer:
        await sim.sender.send_now(portal, outgoing)
    elif outgoing:
        sim.sender.enqueue(portal, outgoing)
    if portal.faults.take_commit_fault(method):
        portal.stats.answers_lost += 1
        if portal.faults.rest_commit_hang:
            await asyncio.sleep(portal.faults.rest_commit_hang)
        return _drop(request)
    return json_response(body, status)
