"""Durable enqueue for many concurrent requests: one Redis pipeline per batch.

Each request builds its job (`shared.jobs.script_call`) and waits on a future; a single
flusher task sends everything that accumulated as one pipeline of `EVALSHA enqueue.lua`
calls, one per event, and resolves the futures with what Redis answered. While one
pipeline is in flight the next batch gathers, so the batch grows with the load and the
round trips per event shrink.

Failure is explicit: a request whose job is not confirmed within `enqueue_timeout` gets
`Unavailable` (the app answers 503, never 200); a job whose request already gave up is
not sent at all if it is still waiting. Redis errors fail the batch they hit, and the next
batch reconnects, so the ingress recovers by itself when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from shared.events import Event
from shared.jobs import ENQUEUE_LUA, RQ_JOB_PREFIX, RQ_QUEUES, JobTemplate, job_fields, new_job_id
from shared.keys import Keys
from shared.logs import log
from shared.settings import Settings

_logger = logging.getLogger("b24pipe.ingress.batcher")


class Unavailable(Exception):
    """The event could not be stored: Redis is down, stalled or refused the write."""


@dataclass(slots=True)
class _Item:
    command: bytes  # one EVALSHA, encoded (RESP)
    future: asyncio.Future[bool]


def _bulk(parts: list[str | int | bytes]) -> bytes:
    """RESP bulk strings of `parts`, the way redis-py would encode them."""
    out = []
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(out)


class _Packer:
    """EVALSHA enqueue.lua for one queue, with everything events share encoded once:
    redis-py's generic encoder costs more per event than the rest of the request."""

    def __init__(self, sha: str, keys: Keys, template: JobTemplate) -> None:
        self._keys = keys
        self._fixed = 3 + 4 + 2 + len(template.static)  # head, KEYS, window and id, template
        self._head = _bulk(["EVALSHA", sha, 4])
        self._shared_keys = _bulk([template.queue_key, RQ_QUEUES, template.dedupe_window])
        self._static = _bulk(list(template.static))

    def pack(self, event: Event) -> bytes:
        job_id = new_job_id()
        fields = job_fields(event)
        return b"".join(
            (
                b"*%d\r\n" % (self._fixed + len(fields)),
                self._head,
                _bulk([self._keys.dedupe(event.id), RQ_JOB_PREFIX + job_id]),
                self._shared_keys,
                _bulk([job_id]),
                self._static,
                _bulk(fields),  # type: ignore[arg-type]
            )
        )


class Enqueuer:
    """`await enqueue(event, queue)`: True once queued, False for a recent duplicate."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        settings: Settings,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._client = client
        self._timeout = settings.enqueue_timeout
        sha = hashlib.sha1(ENQUEUE_LUA.encode(), usedforsecurity=False).hexdigest()
        self._packers = {
            queue: _Packer(sha, keys, JobTemplate.build(queue, settings)) for queue in keys.queues
        }
        self._on_batch = on_batch
        self._pending: list[_Item] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    async def enqueue(self, event: Event, queue: str) -> bool:
        packer = self._packers.get(queue)
        if packer is None:
            raise ValueError(f"unknown queue {queue!r}")
        if self._task is None:
            raise Unavailable("the enqueuer is not running")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(packer.pack(event), future))
        self._idle.clear()
        self._wakeup.set()
        try:
            async with asyncio.timeout(self._timeout):
                return await future
        except TimeoutError:
            raise Unavailable("Redis did not confirm the write in time") from None

    # --- the flusher ----------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="b24pipe-enqueuer")

    async def close(self) -> None:
        """Write out what is held, then stop (SIGTERM path)."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout + 1):
                await self._idle.wait()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = [item for item in self._pending if not item.future.done()]
                self._pending = []
                if batch:
                    await self._flush(batch)
            self._idle.set()

    async def _flush(self, batch: list[_Item]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        try:
            async with asyncio.timeout(self._timeout):
                results = await self._execute(batch)
        except (RedisError, OSError, TimeoutError) as exc:
            log(_logger, logging.WARNING, "enqueue batch failed", size=len(batch), error=type(exc).__name__)
            results = [Unavailable("Redis is unavailable")] * len(batch)
        except Exception as exc:  # a bug must not leave requests hanging
            log(_logger, logging.ERROR, "enqueue batch crashed", size=len(batch), error=type(exc).__name__)
            results = [Unavailable("the enqueuer failed")] * len(batch)
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(bool(result))

    async def _execute(self, batch: list[_Item]) -> list[object]:
        """One pipeline round trip; scripts missing from the server are loaded and those
        calls repeated (a NOSCRIPT call did not run, so repeating it is safe)."""
        results = await self._pipeline(batch)
        missing = [index for index, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            await self._client.script_load(ENQUEUE_LUA)
            again = await self._pipeline([batch[index] for index in missing])
            for index, result in zip(missing, again, strict=True):
                results[index] = result
        return [self._outcome(result) for result in results]

    async def _pipeline(self, batch: list[_Item]) -> list[object]:
        """Send the batch's commands in one write and read one reply per command."""
        pool = self._client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(b"".join(item.command for item in batch))
            results: list[object] = []
            for _ in batch:
                try:
                    results.append(await connection.read_response())
                except ResponseError as exc:
                    results.append(exc)
            return results
        except BaseException:
            await connection.disconnect(nowait=True)  # replies may still be in flight
            raise
        finally:
            await pool.release(connection)

    @staticmethod
    def _outcome(result: object) -> object:
        if isinstance(result, ResponseError):
            # e.g. OOM under noeviction, READONLY replica: the write did not happen
            log(_logger, logging.WARNING, "enqueue refused by Redis", error=str(result)[:120])
            return Unavailable("Redis refused the write")
        return result
