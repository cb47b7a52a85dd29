"""The edge's defences against hostile clients: how a request body is read, and how the
noise such clients make is logged.

- Bodies are never inflated: a `Content-Encoding` other than `identity` is refused with
  415 before the body is read (Bitrix24 never compresses its POSTs; inflating a small
  body into a huge one would block the event loop), and the server's parser is told not
  to decompress either (`runner_options`).
- Headers and body each get `B24PIPE_READ_TIMEOUT` seconds: the header deadline is
  aiohttp's keep-alive timer (armed at connection start and after each answer, it closes
  a connection that has not completed its request headers), the body deadline is
  `read_body`'s. A client trickling its request holds a connection for that long at most,
  and never one of the in-flight slots, which are taken only once the body is read.
- Client disconnects, malformed HTTP and `accept()` failures (out of file descriptors)
  are counted and logged once per interval with the count, never a traceback per
  occurrence (`EdgeLog`): a flood of them cannot flood the log.
- Connections are budgeted to what the open-file limit leaves (`budgeted`): one more is
  closed at once and counted as an `accept()` failure. At the limit itself uvloop's
  libuv would close them silently (and asyncio's loop stops accepting for a second), so
  the process never gets there with connections.
- The open-file limit is raised at start-up to what the caps need (`raise_open_file_limit`):
  systemd and container runtimes often start a process with a soft limit of 1,024 and a
  much higher hard limit, and a Kubernetes pod spec has no field to set it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.hdrs import CONTENT_ENCODING
from aiohttp.http_exceptions import HttpProcessingError

from shared.errors import B24PipeError
from shared.logs import log
from shared.settings import Settings

_logger = logging.getLogger("b24pipe.ingress.edge")
LOG_INTERVAL = 10.0  # seconds between two summary lines of the same kind

ACCEPT_FAILED = "accept_failed"
CLIENT_DISCONNECTED = "client_disconnected"
MALFORMED_HTTP = "malformed_http"


LINGER = 1.0  # seconds an unread body is still drained after a refusal, so the client sees it
# descriptors kept free for what opens after start-up besides connections: Redis
# connections (token reads of uncached portals), the outbound session of installs, logs
FD_RESERVE = 32


def open_files_needed(settings: Settings) -> int:
    """Descriptors one process needs: a connection per request in flight, as many again
    for clients still sending (each for at most the read timeout) and headroom, plus Redis
    and logs."""
    return 4 * settings.max_inflight + 100


def raise_open_file_limit(settings: Settings) -> int:
    """Raise the soft open-file limit towards `open_files_needed` (never above the hard
    limit, never lowering it); warn when the hard limit is too low. Returns the new limit."""
    needed = open_files_needed(settings)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        log(
            _logger,
            logging.WARNING,
            "open-file limit below what B24PIPE_MAX_INFLIGHT needs",
            limit=soft,
            needed=needed,
        )
    return int(soft)


def runner_options(settings: Settings) -> dict[str, Any]:
    """aiohttp server options: no decompression, the header read deadline, and a short
    drain of a refused body (aiohttp's default, 10 s, would let a trickling client keep its
    connection that much longer after its 408)."""
    return {"auto_decompress": False, "keepalive_timeout": settings.read_timeout, "lingering_time": LINGER}


def connection_budget(soft_limit: int, open_now: int) -> int:
    """Connections one process holds at once: what the open-file limit leaves after the
    descriptors open now and `FD_RESERVE`."""
    return max(1, soft_limit - open_now - FD_RESERVE)


def open_descriptors() -> int:
    """Descriptors this process has open (0 where /proc is not there to say)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - not Linux
        return 0


class _Closed(asyncio.Protocol):
    """A connection beyond the budget: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def budgeted(server: web.Server, budget: int, edge_log: EdgeLog) -> Callable[[], asyncio.BaseProtocol]:
    """The listening socket's protocol factory: `server`'s, while it holds fewer than
    `budget` connections; beyond, a connection that closes at once, counted."""

    def factory() -> asyncio.BaseProtocol:
        if len(server.connections) >= budget:
            edge_log.note(ACCEPT_FAILED)
            return _Closed()
        return server()

    return factory


class Refusal(B24PipeError):
    """The body is not read: answer `status` with the contract's error `code`."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


class ClientGone(B24PipeError):
    """The client closed the connection before its body was complete: nobody to answer."""


async def read_body(request: web.Request, max_body: int, read_timeout: float) -> bytes:
    """The request body, read within `read_timeout` seconds and `max_body` bytes, never inflated."""
    encoding = request.headers.get(CONTENT_ENCODING, "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise Refusal(415, "unsupported_media_type", "compressed bodies are not accepted")
    length = request.content_length
    if length is not None and length > max_body:
        raise Refusal(413, "payload_too_large", f"body exceeds {max_body} bytes")
    try:
        if request.content.is_eof():  # the whole body came with the headers: no wait, no timer
            return await request.read()
        async with asyncio.timeout(read_timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Refusal(413, "payload_too_large", f"body exceeds {max_body} bytes") from None
    except TimeoutError:
        raise Refusal(408, "request_timeout", f"body not received within {read_timeout:g} s") from None
    except ConnectionError:
        raise ClientGone from None


class EdgeLog(logging.Filter):
    """Counts edge noise and logs one line per kind and interval: `edge errors`, with `kind`,
    `count` and `interval`. Installed as a filter on aiohttp's server logger (malformed HTTP,
    disconnects it reports) and as the loop's exception handler (failed `accept()`s)."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        super().__init__()
        self.interval = interval
        self.counts: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._previous_handler: Any = None

    def note(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        for kind, count in sorted(counts.items()):
            log(_logger, logging.WARNING, "edge errors", kind=kind, count=count, interval=self.interval)

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop aiohttp's per-request traceback for client faults, counting it instead."""
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ConnectionError):
            self.note(CLIENT_DISCONNECTED)
            return False
        if isinstance(exc, HttpProcessingError):
            self.note(MALFORMED_HTTP)
            return False
        return True

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            self.note(ACCEPT_FAILED)  # asyncio pauses accepting for a second by itself
            return
        loop.default_exception_handler(context)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.flush()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._on_loop_error)
        logging.getLogger("aiohttp.server").addFilter(self)
        self._task = asyncio.create_task(self._flush_forever(), name="b24pipe-edge-log")

    async def stop(self) -> None:
        logging.getLogger("aiohttp.server").removeFilter(self)
        asyncio.get_running_loop().set_exception_handler(self._previous_handler)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.flush()
