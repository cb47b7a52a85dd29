"""The ingress application: routes, and the event path read → parse → validate → admit →
check → enqueue. The body is read first, bounded in time and size and never inflated
(`ingress.edge`), then parsed and validated (no await: no slot is needed for that), and
only then does the request take one of the in-flight slots, as its portal's
(`ingress.admission`: a portal flooding a busy process is refused first); the install page
goes through the same reading, parser bounds and slots.

`create_app(settings)` builds an aiohttp app whose startup opens Redis, starts the token
cache's version poller and the enqueuer; cleanup writes out held jobs and closes. Answers
are the contract's (DESIGN §2), byte for byte, pre-encoded once.

Lifecycle hook points (wired by the lead): `app[LIFECYCLE_KEY]` is a
`ingress.hooks.LifecycleHandler` (default: `Refuse`); `app[ENQUEUER_KEY]` is the
`Enqueuer` it may call (`await enqueuer.enqueue(event, queue)`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.hdrs import CONTENT_TYPE
from orjson import dumps
from pydantic import ValidationError
from redis.exceptions import RedisError

from ingress import install_page
from ingress.admission import Slots
from ingress.delivery import Delivery, Plain
from ingress.edge import CLIENT_DISCONNECTED, ClientGone, EdgeLog, Refusal, read_body
from ingress.enqueuer import Enqueuer, Unavailable
from ingress.formparse import FormError, media_type, parse_body
from ingress.hooks import INVALID_TOKEN, UNAVAILABLE, LifecycleHandler, Refuse, answer
from ingress.metrics import IngressMetrics
from ingress.tokencheck import TokenCache, Verdict
from shared import queuestats, tracing
from shared.jobs import queue_of
from shared.keys import Keys
from shared.logs import mask, security_event
from shared.probe import PROBE_EVENT, Arrivals, marker_of
from shared.redisconn import async_redis, readiness, server_facts
from shared.settings import Settings

SETTINGS_KEY = web.AppKey("settings", Settings)
LIFECYCLE_KEY = web.AppKey("lifecycle", LifecycleHandler)
ENQUEUER_KEY = web.AppKey("enqueuer", Enqueuer)
METRICS_KEY = web.AppKey("metrics", IngressMetrics)
TOKENS_KEY = web.AppKey("tokens", TokenCache)
REDIS_KEY = web.AppKey("redis", aioredis.Redis)
VERIFY_KEY = web.AppKey("verify_installs", bool)
SESSION_KEY = web.AppKey("http_session", aiohttp.ClientSession)
EDGE_LOG_KEY = web.AppKey("edge_log", EdgeLog)
STOPPING_KEY = web.AppKey("stopping", asyncio.Event)  # set on SIGTERM: /readyz fails from then on

OK = b'{"status":"ok","message":"event accepted"}'
_HOOKED = frozenset({"ONAPPINSTALL", "ONAPPUPDATE"})  # the lifecycle handler takes the model
_ROUTE = {"http.request.method": "POST", "http.route": "/b24/events"}
QUEUE_GAUGES_TIMEOUT = 1.0  # seconds /metrics waits for the queue gauges' Redis read
_ERROR_STATUS = {
    "invalid_request": 400,
    "request_timeout": 408,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
}
_REFUSAL_OUTCOME = {
    "request_timeout": "timeout",
    "payload_too_large": "too_large",
    "unsupported_media_type": "unsupported",
}


def _error(code: str, detail: str) -> web.Response:
    return answer(_ERROR_STATUS[code], dumps({"status": "error", "error": code, "detail": detail}))


def _remote(request: web.Request) -> str:
    """The peer's address, for refusals and security lines (not needed to accept)."""
    return request.remote or ""


def _validation_detail(exc: ValidationError) -> str:
    """First problem as `location: message`, never the offending value (may be a secret)."""
    first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"[:200]


_INSTALL_PAGE = ""  # the install page's requests take their slots under this key, not a portal's


@dataclass(slots=True)
class _Read:
    """A parsed and validated event body: what the event path needs (`plain`), and the model
    (`delivery`) where the fast path could not read it or a lifecycle hook takes it."""

    payload: dict[str, Any]
    plain: Plain
    delivery: Delivery | None


class EventPath:
    """POST /b24/events, with the per-process state it needs bound once."""

    def __init__(self, app: web.Application) -> None:
        settings = app[SETTINGS_KEY]
        self.app = app
        self.keys = Keys(settings.namespace)
        self.max_body = settings.max_body_bytes
        self.max_keys = settings.max_form_keys
        self.max_depth = settings.max_form_depth
        self.slots = Slots(settings.max_inflight)
        self.read_timeout = settings.read_timeout
        self.timeout = settings.enqueue_timeout
        self.metrics = app[METRICS_KEY]

    async def bind(self, app: web.Application) -> None:
        """Startup hook (after `_startup`): keep what every request uses at hand."""
        self.tokens = app[TOKENS_KEY]
        self.enqueuer = app[ENQUEUER_KEY]
        self.probes = Arrivals(app[REDIS_KEY], self.keys)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = await read_body(request, self.max_body, self.read_timeout)
        except Refusal as refusal:
            return self._refuse("", _REFUSAL_OUTCOME[refusal.code], refusal.code, refusal.detail)
        except ClientGone:
            return self._gone()
        metrics = self.metrics
        loop = asyncio.get_running_loop()
        started = loop.time()
        read = self._read(request, body)
        if isinstance(read, web.Response):
            metrics.observe_latency(loop.time() - started)
            return read
        member_id = read.plain.member_id
        if not self._take_slot(member_id):
            metrics.request(read.plain.event, "overloaded")
            return answer(503, UNAVAILABLE)
        try:
            # one deadline for everything this request waits for: the token read and the write
            if not tracing.enabled():
                return await self._handle(request, read, started + self.timeout)
            with tracing.span("POST /b24/events", _ROUTE, carrier=request.headers, kind="server") as current:
                response = await self._handle(request, read, started + self.timeout)
                current.set_attribute("http.response.status_code", response.status)
                return response
        finally:
            self._give_back(member_id)
            metrics.observe_latency(loop.time() - started)

    def _take_slot(self, member_id: str) -> bool:
        """One of the in-flight slots, taken once the body is read and parsed: a client
        still sending (at most `B24PIPE_READ_TIMEOUT`) holds a connection, never a slot, and
        the portal is known, so a flooding one is refused first (`ingress.admission`)."""
        slots = self.slots
        if not slots.take(member_id):
            self.metrics.reject("overloaded")
            return False
        self.metrics.inflight = slots.total
        return True

    def _give_back(self, member_id: str) -> None:
        self.slots.give_back(member_id)
        self.metrics.inflight = self.slots.total

    def _gone(self) -> web.Response:
        """The client left mid-body: counted for the edge log; the answer reaches nobody."""
        self.app[EDGE_LOG_KEY].note(CLIENT_DISCONNECTED)
        return answer(400, b"")

    async def install(self, request: web.Request) -> web.Response:
        """POST /b24/install: read and parsed under the same bounds and cap as events."""
        try:
            body = await read_body(request, self.max_body, self.read_timeout)
        except Refusal as refusal:
            self.metrics.reject(refusal.code)
            return install_page.refused(refusal.status, install_page.MALFORMED)
        except ClientGone:
            return self._gone()
        if not self._take_slot(_INSTALL_PAGE):
            self.metrics.request("", "overloaded")
            return install_page.refused(503, install_page.TRY_AGAIN)
        try:
            try:
                content_type, charset = media_type(request.headers.get(CONTENT_TYPE))
                payload = parse_body(
                    body, content_type, charset, max_keys=self.max_keys, max_depth=self.max_depth
                )
            except FormError as exc:
                self.metrics.reject(exc.code)
                status = _ERROR_STATUS[exc.code]
                security_event(
                    "install_refused", source="install_page", remote=_remote(request), reason=exc.detail
                )
                return install_page.refused(status, install_page.MALFORMED)
            form = {key: value for key, value in payload.items() if isinstance(value, str)}
            query = dict(request.query)
            return await self.app[LIFECYCLE_KEY].on_install_page(form, query, _remote(request))
        finally:
            self._give_back(_INSTALL_PAGE)

    def _read(self, request: web.Request, body: bytes) -> _Read | web.Response:
        """The body parsed and validated, or the 400/415 that refuses it."""
        try:
            content_type, charset = media_type(request.headers.get(CONTENT_TYPE))
            payload = parse_body(
                body, content_type, charset, max_keys=self.max_keys, max_depth=self.max_depth
            )
            plain = Plain.read(payload)
            delivery = Delivery.model_validate(payload) if plain is None or plain.event in _HOOKED else None
        except FormError as exc:
            outcome = "unsupported" if exc.code == "unsupported_media_type" else "invalid"
            return self._refuse("", outcome, exc.code, exc.detail, _remote(request))
        except ValidationError as exc:
            return self._refuse("", "invalid", "invalid_request", _validation_detail(exc), _remote(request))
        if plain is None:
            assert delivery is not None  # the model read what the fast path did not
            plain = delivery.plain()
        return _Read(payload, plain, delivery)

    async def _handle(self, request: web.Request, read: _Read, deadline: float) -> web.Response:
        metrics = self.metrics
        payload, delivery = read.payload, read.delivery
        if delivery is not None:
            if delivery.event == "ONAPPINSTALL":
                metrics.request(delivery.event, "lifecycle")
                return self._counted(await self.app[LIFECYCLE_KEY].on_install(delivery, _remote(request)))
            if delivery.event == "ONAPPUPDATE":
                metrics.request(delivery.event, "lifecycle")
                return self._counted(await self.app[LIFECYCLE_KEY].on_update(delivery, _remote(request)))
        plain = read.plain
        name = plain.event
        member_id = plain.member_id
        token = plain.application_token
        tokens = self.tokens
        decision = tokens.cached(member_id, token)
        if decision is None:
            try:
                decision = await tokens.check(member_id, token, deadline)
            except (RedisError, TimeoutError):
                return self._unavailable(name)
        if decision.verdict is Verdict.REJECT:
            reason = decision.reason.value if decision.reason else "rejected"
            metrics.request(name, "rejected")
            metrics.reject(reason)
            security_event(
                "token_rejected",
                reason=reason,
                member_id=member_id,
                event=name,
                token=mask(token),
                remote=_remote(request),
            )
            return answer(401, INVALID_TOKEN)
        if decision.verdict is Verdict.QUARANTINE:
            held = delivery or Delivery.model_validate(payload)
            try:
                async with asyncio.timeout_at(deadline):  # a stalled Redis: 503 in time here too
                    response = await self.app[LIFECYCLE_KEY].quarantine(held, _remote(request))
            except (RedisError, TimeoutError):
                return self._unavailable(name)
            # a refused hold is a lost event like any other 503 (the ingress alert counts it)
            metrics.request(name, "unavailable" if response.status == 503 else "quarantined")
            return self._counted(response)

        if name == PROBE_EVENT and (marker := marker_of(payload)) is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    latency = await self.probes.record(member_id, marker, time.time())
            except (RedisError, TimeoutError):
                return self._unavailable(name)
            if latency is not None:  # our probe: recorded, nothing to queue
                metrics.request(name, "probe")
                metrics.observe_probe(latency)
                return answer(200, OK)

        try:
            queued = plain.queued_form()
            if tracing.enabled():  # the worker's span of this event continues this trace
                queued[tracing.TRACE_FIELD] = tracing.carrier()
            fresh = await self.enqueuer.submit(queued, queue_of(self.keys, name), deadline)
        except Unavailable:
            return self._unavailable(name)
        metrics.request(name, "accepted" if fresh else "duplicate")
        return answer(200, OK)

    def _refuse(self, name: str, outcome: str, code: str, detail: str, remote: str = "") -> web.Response:
        self.metrics.request(name, outcome)
        self.metrics.reject(code)
        if code == "invalid_request":
            security_event("invalid_request", detail=detail, remote=remote)
        return _error(code, detail)

    def _counted(self, response: web.Response) -> web.Response:
        """A lifecycle hook's answer; its 503s (a cap on unverified installs and their
        quarantines reached, or Redis failing) are counted as `lifecycle_refused`."""
        if response.status == 503:
            self.metrics.reject("lifecycle_refused")
        return response

    def _unavailable(self, name: str) -> web.Response:
        self.metrics.request(name, "unavailable")
        self.metrics.reject("unavailable")
        return answer(503, UNAVAILABLE)


async def healthz(request: web.Request) -> web.Response:
    return answer(200, b'{"status":"ok"}')


async def readyz(request: web.Request) -> web.Response:
    """Ready when not shutting down, Redis answers and keeps what we acknowledge; names the
    ack mode in force. Where CONFIG is refused (managed Redis) durability is `unknown`: a
    warning and a metric, and a failure only with `B24PIPE_DURABILITY_STRICT`."""
    app = request.app
    settings = app[SETTINGS_KEY]
    if app[STOPPING_KEY].is_set():
        return answer(503, dumps({"status": "stopping", "ack": settings.ack}))
    try:
        facts = await server_facts(app[REDIS_KEY])
    except (RedisError, OSError) as exc:
        return answer(503, dumps({"status": "error", "problems": [f"redis: {type(exc).__name__}"]}))
    verdict = readiness(facts, settings.ack, settings.durability_strict)
    app[METRICS_KEY].durability_unknown(verdict.durability == "unknown")
    report = {"ack": settings.ack, "durability": verdict.durability}
    if verdict.problems:
        return answer(503, dumps({"status": "error", "problems": verdict.problems, **report}))
    return answer(200, dumps({"status": "ok", **report}))


async def metrics_view(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS_KEY].render()
    # the queue gauges come from the ingress too, so they live on while every worker is dead;
    # without Redis (down, or stalled past QUEUE_GAUGES_TIMEOUT) they are absent, which the
    # queue-gauges-missing alert notices, and the rest of /metrics is answered at once
    settings = request.app[SETTINGS_KEY]
    try:
        async with asyncio.timeout(QUEUE_GAUGES_TIMEOUT):
            snapshot = await queuestats.aread(
                request.app[REDIS_KEY], Keys(settings.namespace), settings.recovery_after
            )
        body += queuestats.render(snapshot)
    except (RedisError, OSError, TimeoutError):
        pass
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


async def _startup(app: web.Application) -> None:
    settings = app[SETTINGS_KEY]
    if not tracing.enabled():
        tracing.configure("b24pipe-ingress")  # OTEL_* variables; off unless an exporter is named
    # a stalled read is abandoned soon after the requests waiting for it gave up, and never
    # before the batch that the enqueuer is waiting for (its own timeout is in charge)
    client = async_redis(settings, socket_timeout=settings.enqueue_timeout + 1)
    keys = Keys(settings.namespace)
    app[REDIS_KEY] = client
    tokens = TokenCache(client, keys)
    app[TOKENS_KEY] = tokens
    metrics = app[METRICS_KEY]
    metrics.start()
    app[EDGE_LOG_KEY].start()
    enqueuer = Enqueuer(client, keys, settings, on_batch=metrics.observe_batch)
    app[ENQUEUER_KEY] = enqueuer
    enqueuer.start()
    await tokens.start()  # never fails on Redis: until it answers, requests get 503
    if app[VERIFY_KEY]:
        # imported here: the verifying lifecycle pulls in the outbound HTTP machinery
        from ingress.lifecycle import Lifecycle

        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.http_timeout))
        app[SESSION_KEY] = session
        app[LIFECYCLE_KEY] = Lifecycle(settings, client, enqueuer, session)


async def _cleanup(app: web.Application) -> None:
    if SESSION_KEY in app:
        await app[SESSION_KEY].close()
    await app[ENQUEUER_KEY].close()
    await app[TOKENS_KEY].stop()
    await app[METRICS_KEY].stop()
    await app[EDGE_LOG_KEY].stop()
    await app[REDIS_KEY].aclose()


def create_app(
    settings: Settings,
    *,
    lifecycle: LifecycleHandler | None = None,
    extra_events: Iterable[str] = (),
    verify_installs: bool = False,
) -> web.Application:
    """The ingress app. `verify_installs=True` (what `b24pipe ingress` runs) verifies installs
    and updates with the authorization server (`ingress.lifecycle`); otherwise `lifecycle`,
    or `Refuse`, which accepts nothing unverified."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS_KEY] = settings
    app[VERIFY_KEY] = verify_installs
    app[LIFECYCLE_KEY] = lifecycle or Refuse()
    app[STOPPING_KEY] = asyncio.Event()
    app[METRICS_KEY] = IngressMetrics(extra_events)
    app[EDGE_LOG_KEY] = EdgeLog()
    path = EventPath(app)
    app.router.add_post("/b24/events", path.handle)
    app.router.add_post("/b24/install", path.install)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    app.on_startup.append(_startup)
    app.on_startup.append(path.bind)
    app.on_cleanup.append(_cleanup)
    return app
