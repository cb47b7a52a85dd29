"""HTTP to Bitrix24: one aiohttp session per worker process, host checks, redirects, error mapping.

The worker runs synchronous RQ jobs but aiohttp is asynchronous, so each process keeps one
event loop on a background thread (`Runtime`) holding one `ClientSession`: keep-alive
connections are reused across jobs, and the sync client submits coroutines to that loop.
There is one implementation of the client logic (async); the sync client only waits for it.

`Transport.post` does exactly one logical request: every URL, and every redirect target, is
checked against the outbound host policy before anything is sent (no SSRF, no token sent to a
host we did not vouch for). Retries and token handling are the client's business. Texts of
errors raised here name codes, methods and hosts, never URLs (an inbound webhook's URL holds
its secret) nor tokens.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from collections.abc import Coroutine, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson
import redis.asyncio as aioredis

from shared.logs import scrub
from shared.outbound import HostPolicy, OutboundRefused
from shared.redisconn import async_redis_for
from workers.errors import (
    AccessDenied,
    ApiError,
    AuthRevoked,
    B24Error,
    BadRequest,
    IdempotencyKeyReused,
    MethodNotFound,
    OperatingLimit,
    OutboundBlocked,
    PortalDeleted,
    RateLimited,
    ScopeMissing,
)

T = TypeVar("T")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
NOT_SENT = "CONNECT_ERROR"  # the code of a transport error raised before anything was sent
TIMED_OUT = "TIMEOUT"  # sent, and no answer within B24PIPE_HTTP_TIMEOUT
MAX_REDIRECTS = 3


@dataclass(frozen=True)
class Answer:
    """What came back: the status, the JSON object (None for HTML or garbage), and for a
    redirect not followed, where it points."""

    status: int
    payload: dict[str, Any] | None
    location: str = ""


class Transport:
    def __init__(self, session: aiohttp.ClientSession, policy: HostPolicy, timeout: float) -> None:
        self._session = session
        self._policy = policy
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def check(self, url: str, portal_hosts: Iterable[str]) -> None:
        hosts = tuple(portal_hosts)
        try:
            # check_url may resolve DNS (blocking): keep it off the event loop.
            await asyncio.to_thread(self._policy.check_url, url, hosts)
        except OutboundRefused as exc:
            raise OutboundBlocked("OUTBOUND_REFUSED", str(exc)) from None

    async def post(
        self,
        url: str,
        *,
        json: Mapping[str, Any] | None = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        portal_hosts: Iterable[str] = (),
        method: str = "",
        follow: bool = True,
    ) -> Answer:
        """POST once, following re-checked redirects with the same body; with `follow=False`
        a redirect is returned as it is (a portal's redirect must be confirmed first)."""
        hosts = tuple(portal_hosts)
        if json is not None:
            body: bytes | aiohttp.FormData = orjson.dumps(json)
            sent_headers = {"Content-Type": "application/json", **(headers or {})}
        else:
            body = aiohttp.FormData(dict(form or {}))
            sent_headers = dict(headers or {})
        for _ in range(MAX_REDIRECTS + 1):
            await self.check(url, hosts)
            try:
                async with self._session.post(
                    url, data=body, headers=sent_headers, allow_redirects=False, timeout=self._timeout
                ) as response:
                    if response.status in _REDIRECTS and "Location" in response.headers:
                        target = urljoin(url, response.headers["Location"])
                        if not follow:
                            return Answer(response.status, None, location=target)
                        url = target
                        if isinstance(body, aiohttp.FormData):
                            body = aiohttp.FormData(dict(form or {}))
                        continue
                    raw = await response.read()
                    return Answer(response.status, _json_object(raw))
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # no connection was made: the request never left, resending is always safe
                raise ApiError(NOT_SENT, type(exc).__name__, method=method) from None
            except TimeoutError as exc:  # sent, no answer in time: the request may still be running
                raise ApiError(TIMED_OUT, type(exc).__name__, method=method) from None
            except aiohttp.ClientError as exc:
                raise ApiError("CONNECTION_ERROR", type(exc).__name__, method=method) from None
        raise ApiError("TOO_MANY_REDIRECTS", method=method)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# --- error mapping (pure) --------------------------------------------------------------

_ACCESS = frozenset(
    {"ACCESS_DENIED", "INVALID_CREDENTIALS", "user_access_error", "WRONG_AUTH_TYPE", "WRONG_LICENSE"}
)
_AUTH = frozenset({"expired_token", "invalid_token", "NO_AUTH_FOUND", "INVALID_TOKEN", "EXPIRED_TOKEN"})


def error_code(answer: Answer) -> str | None:
    """Bitrix24's error code, "HTML_ERROR_PAGE" for a non-JSON answer, None for success."""
    if answer.payload is None:
        return "HTML_ERROR_PAGE"
    code = answer.payload.get("error")
    if isinstance(code, Mapping):  # REST 3.0: {"error": {"code", "message", "validation"}}
        code = code.get("code") or f"HTTP_{answer.status}"
    if code:
        return str(code)
    if answer.status >= 400:
        return f"HTTP_{answer.status}"
    return None


def error_for(answer: Answer, method: str) -> B24Error:
    """The typed error for a failed answer. The description is scrubbed and bounded."""
    code = error_code(answer) or f"HTTP_{answer.status}"
    raw = _description(answer.payload)
    description = scrub(str(raw))[:200]
    kwargs: dict[str, Any] = {"method": method, "status": answer.status}
    if answer.status == 422:
        return IdempotencyKeyReused(code, description or "Idempotency-Key reused with another body", **kwargs)
    if code == "QUERY_LIMIT_EXCEEDED":
        return RateLimited(1.0, method=method)
    if code == "OPERATION_TIME_LIMIT":
        return OperatingLimit(60.0, method=method)
    if code == "PORTAL_DELETED":
        return PortalDeleted(code, description, **kwargs)
    if code in ("insufficient_scope", "INSUFFICIENT_SCOPE"):
        return ScopeMissing(code, description, **kwargs)
    if code in _ACCESS:
        return AccessDenied(code, description, **kwargs)
    if code in _AUTH or answer.status == 401:
        return AuthRevoked(code, description, **kwargs)
    if code == "ERROR_METHOD_NOT_FOUND":
        return MethodNotFound(code, description, **kwargs)
    if answer.status >= 500 or answer.payload is None or answer.status < 400:
        return ApiError(code, description, **kwargs)
    if answer.status == 403:
        return AccessDenied(code, description, **kwargs)
    if answer.status == 404:
        return MethodNotFound(code, description, **kwargs)
    return BadRequest(code, description, **kwargs)


def _description(payload: Mapping[str, Any] | None) -> object:
    """The error's text: `error_description` (v2) or `error.message` (v3)."""
    if not payload:
        return ""
    error = payload.get("error")
    if isinstance(error, Mapping):
        return error.get("message") or ""
    return payload.get("error_description", "")


def php_keyed(value: Any) -> dict[str, Any]:
    """A batch answer's per-command part as a dict. PHP's json_encode writes an array whose
    keys are exactly 0..n-1 as a JSON list (commands named "0", "1", ... all answered), any
    other as an object, and an empty one as `[]`: the list's index is the command's key."""
    if isinstance(value, list):
        return {str(index): item for index, item in enumerate(value)}
    return dict(value) if isinstance(value, Mapping) else {}


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


# --- the per-process runtime ---------------------------------------------------------------


class Runtime:
    """One event loop thread and one aiohttp session per process, shared by every job."""

    _instance: Runtime | None = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="b24-client-loop", daemon=True)
        self._thread.start()
        self.session: aiohttp.ClientSession = self.run(self._open())
        self._redis: dict[str, aioredis.Redis] = {}
        atexit.register(self.close)

    def close(self) -> None:
        """Close the session and Redis pools (at exit: no half-open keep-alive sockets)."""
        if self.pid != os.getpid() or not self.loop.is_running():
            return

        async def closing() -> None:
            await self.session.close()
            for client in self._redis.values():
                await client.aclose()

        asyncio.run_coroutine_threadsafe(closing(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)

    @staticmethod
    async def _open() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=100, limit_per_host=20, keepalive_timeout=60, ssl=True)
        return aiohttp.ClientSession(connector=connector, json_serialize=lambda v: orjson.dumps(v).decode())

    @classmethod
    def get(cls) -> Runtime:
        """This process's runtime (a forked child gets its own: sockets are not shared)."""
        with cls._guard:
            if cls._instance is None or cls._instance.pid != os.getpid():
                cls._instance = Runtime()
            return cls._instance

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the loop thread and wait for it (from any other thread)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("the sync client cannot be used inside an async handler: use AsyncB24")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def redis(self, url: str) -> aioredis.Redis:
        """An asyncio Redis client bound to this loop (created lazily, one per URL)."""
        client = self._redis.get(url)
        if client is None:
            client = async_redis_for(url, socket_connect_timeout=1.0, socket_timeout=5.0)
            self._redis[url] = client
        return client
