"""Durable enqueue for many concurrent requests: one script call per batch.

Each request builds its job (`shared.jobs.QueuedJob`) and waits on a future; a flusher
task writes everything that accumulated with one `EVALSHA enqueue.lua` per queue (all of
them in one write to one connection) and resolves the futures with what Redis answered.
While the flushers are busy the next batch gathers, so the batch grows with the load and
the round trips and commands per event shrink.

Failure is explicit: every request carries a deadline, and one watchdog per batcher fails
the requests whose deadline passed with `Unavailable` (the app answers 503, never 200),
whether their job is still waiting or in flight; a job whose request already gave up is not
sent at all. A batch that Redis does not answer within the client's socket timeout (the
app sets it to `enqueue_timeout` + 1 s: never before its requests' deadlines, and redis-py
already times every read) is abandoned with its connection, and the next batch reconnects,
so the ingress recovers by itself when Redis is back. A batch that fails on a connection
error (a pooled connection Redis closed when it restarted, a primary demoted by a failover)
is sent once more on a fresh connection if its deadline allows: a stale connection is not
a reason for a 503 when the server answers.

`B24PIPE_ACK` (`shared.ackmode`): the wait it needs (`WAIT`, `WAITAOF`) goes out in the same
write as the batch's scripts, once per batch; a batch whose wait is not confirmed within
its earliest deadline is answered 503 like any failed write. The plan is made from the
server's answers when a flusher (re)connects, so a failover to a different server is
followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from ingress.tasks import stop_tasks
from shared import lua
from shared.ackmode import AckPlan
from shared.ackmode import plan as ack_plan
from shared.errors import B24PipeError
from shared.events import Event
from shared.jobs import ENQUEUE, JobTemplate, QueuedJob, script_call
from shared.keys import Keys
from shared.logs import log
from shared.redisconn import server_facts
from shared.settings import Settings

_logger = logging.getLogger("b24pipe.ingress.batcher")

MAX_BATCH = 512  # events per script call: bounds Lua's unpack() and one call's latency
# Batches in flight at once, each on its own connection. With one, a process that is faster
# than Redis's round trip sits idle while every request waits for it; with two, requests
# that arrive meanwhile leave at once.
FLIGHTS = 2
WATCH_INTERVAL = 0.05  # how late past its deadline a request may learn that it failed
_QUEUED = ord("1")  # enqueue.lua's flag for a job written ("0": a duplicate)


class Unavailable(B24PipeError):
    """The event could not be stored: Redis is down, stalled or refused the write."""


class _NotConfirmed(B24PipeError):
    """The batch was written but its acknowledgement wait did not confirm it in time."""


@dataclass(slots=True)
class _Item:
    queue: str
    job: QueuedJob
    future: asyncio.Future[bool]
    deadline: float  # event loop time


def _resp(parts: Sequence[str | int | bytes]) -> bytes:
    """One command in RESP, the way redis-py would send it; its generic encoder costs more
    per event than the rest of the request."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part if type(part) is bytes else str(part).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(out)


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
        self._keys = keys
        self._timeout = settings.enqueue_timeout
        self._mode = settings.ack
        self._plan: AckPlan | None = None  # made on first use and after each connection error
        self._down = False  # batches are failing (logged once per change)
        self._script = lua.script(client, ENQUEUE)  # its SHA goes into the raw EVALSHA calls
        self._templates = {queue: JobTemplate.build(queue, settings) for queue in keys.queues}
        self._on_batch = on_batch
        self._pending: list[_Item] = []
        self._inflight: list[list[_Item]] = [[] for _ in range(FLIGHTS)]  # per flusher
        self._connections: list[Connection | None] = [None] * FLIGHTS  # per flusher
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def enqueue(self, event: Event | dict[str, Any], queue: str, deadline: float | None = None) -> bool:
        """Queue `event` (a model, or its queued form `Event.model_dump(mode="json")`);
        `deadline` (event loop time) defaults to now + `enqueue_timeout`. Raises
        `Unavailable` when the job is not confirmed stored by then."""
        if isinstance(event, Event):
            event = event.model_dump(mode="json")
        return await self.submit(event, queue, deadline)

    def submit(
        self, event: dict[str, Any], queue: str, deadline: float | None = None
    ) -> asyncio.Future[bool]:
        """`enqueue` for the hot path: the queued form only, and a future to await instead
        of one more coroutine per request."""
        if queue not in self._templates:
            raise ValueError(f"unknown queue {queue!r}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if not self._tasks:
            future.set_exception(Unavailable("the enqueuer is not running"))
            return future
        if deadline is None:
            deadline = loop.time() + self._timeout
        self._pending.append(_Item(queue, QueuedJob.of(self._keys, event), future, deadline))
        self._idle.clear()
        self._wakeup.set()
        return future

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if not self._tasks:
            self._closing = False
            self._tasks = [
                *(
                    asyncio.create_task(self._run(slot), name=f"b24pipe-enqueuer-{slot}")
                    for slot in range(FLIGHTS)
                ),
                asyncio.create_task(self._watch(), name="b24pipe-enqueuer-watchdog"),
            ]

    async def close(self) -> None:
        """Write out what is held, then stop (SIGTERM path)."""
        if not self._tasks:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout + 1):
                await self._idle.wait()
        self._closing = True
        self._wakeup.set()
        await stop_tasks(self._tasks, self._timeout + 1)
        self._tasks = []
        self._fail(
            [*self._pending, *(item for flight in self._inflight for item in flight)], "the enqueuer stopped"
        )
        self._pending, self._inflight = [], [[] for _ in range(FLIGHTS)]
        for connection in self._connections:
            if connection is not None:
                await self._client.connection_pool.release(connection)
        self._connections = [None] * FLIGHTS

    # --- the watchdog ---------------------------------------------------------------------
    async def _watch(self) -> None:
        """Fail requests past their deadline: one timer for all of them, not one each."""
        loop = asyncio.get_running_loop()
        while not self._closing:
            await asyncio.sleep(WATCH_INTERVAL)
            now = loop.time()
            for items in (self._pending, *self._inflight):
                self._fail([item for item in items if item.deadline <= now], "Redis did not confirm in time")

    @staticmethod
    def _fail(items: list[_Item], why: str) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(Unavailable(why))

    # --- the flusher ----------------------------------------------------------------------
    async def _run(self, slot: int) -> None:
        """One of `FLIGHTS` flushers: each takes whatever is pending when it is free, so a
        new batch leaves while another is still in flight."""
        while not self._closing:
            if not self._pending:
                if not any(self._inflight):
                    self._idle.set()
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            batch = [item for item in self._pending[:MAX_BATCH] if not item.future.done()]
            del self._pending[:MAX_BATCH]
            if batch:
                await self._flush(batch, slot)

    async def _flush(self, batch: list[_Item], slot: int) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        groups: dict[str, list[_Item]] = {}
        for item in batch:
            groups.setdefault(item.queue, []).append(item)
        now = datetime.now(UTC)
        calls = []
        for queue, items in groups.items():
            script_keys, argv = script_call(self._templates[queue], [item.job for item in items], now)
            calls.append(_resp(["EVALSHA", self._script.sha, len(script_keys), *script_keys, *argv]))
        self._inflight[slot] = batch
        try:
            replies = await self._write(calls, batch, slot)
        except _NotConfirmed as exc:
            self._failing("enqueue batch not confirmed", detail=str(exc))
            self._fail(batch, str(exc))
            return
        except (RedisError, OSError, TimeoutError) as exc:
            self._failing("enqueue batch failed", error=type(exc).__name__)
            self._fail(batch, "Redis is unavailable")
            return
        except Exception as exc:  # a bug must not leave requests hanging
            log(_logger, logging.ERROR, "enqueue batch crashed", size=len(batch), error=type(exc).__name__)
            self._fail(batch, "the enqueuer failed")
            return
        finally:
            self._inflight[slot] = []
        if self._down:
            self._down = False
            log(_logger, logging.WARNING, "enqueue works again")
        for items, reply in zip(groups.values(), replies, strict=True):
            if not isinstance(reply, bytes) or len(reply) != len(items):
                # e.g. OOM under noeviction, READONLY replica: the script wrote nothing
                log(_logger, logging.WARNING, "enqueue refused by Redis", error=str(reply)[:120])
                self._fail(items, "Redis refused the write")
                continue
            for item, flag in zip(items, reply, strict=True):
                if not item.future.done():
                    item.future.set_result(flag == _QUEUED)

    def _failing(self, message: str, **fields: object) -> None:
        """One log line when batches start failing (an outage fails every batch until it
        ends), one when they work again; the 503s are counted in the metrics."""
        if not self._down:
            self._down = True
            log(_logger, logging.WARNING, message, **fields)

    async def _write(self, calls: list[bytes], batch: list[_Item], slot: int) -> list[object]:
        """The batch's scripts and its acknowledgement wait; once more on a fresh connection
        after a connection error while the batch's deadline allows (the scripts skip what
        the first attempt may have written: its dedupe keys make it a duplicate)."""
        loop = asyncio.get_running_loop()
        try:
            return await self._confirmed(calls, batch, slot)
        except RedisConnectionError as exc:
            self._plan = None
            if min(item.deadline for item in batch) - loop.time() <= 0:
                raise
            log(_logger, logging.INFO, "enqueue retried on a fresh connection", error=type(exc).__name__)
            return await self._confirmed(calls, batch, slot)

    async def _confirmed(self, calls: list[bytes], batch: list[_Item], slot: int) -> list[object]:
        if self._plan is None or self._plan.problem:  # asked again until the server is fixed
            facts = await server_facts(self._client)
            self._plan = ack_plan(self._mode, facts.config, facts.has_waitaof)
        plan = self._plan
        if plan.problem:
            raise _NotConfirmed(plan.problem)
        remaining = min(item.deadline for item in batch) - asyncio.get_running_loop().time()
        wait = plan.command(int(remaining * 1000))
        if wait is None:
            return await self._execute(calls, slot)
        replies = await self._execute(calls, slot, _resp(wait))
        if not plan.confirmed(replies[-1]):
            raise _NotConfirmed(f"B24PIPE_ACK={plan.mode}: not confirmed in time ({str(replies[-1])[:80]})")
        return replies[:-1]

    async def _execute(self, calls: list[bytes], slot: int, wait: bytes | None = None) -> list[object]:
        """One round trip (the calls, then `wait` if any: its reply comes last); if the
        server lost the script it is loaded and the calls repeated (a NOSCRIPT call did not
        run, so repeating it is safe), followed by the wait again, so that the wait always
        covers every write it confirms."""
        tail = [wait] if wait is not None else []
        replies = await self._send([*calls, *tail], slot)
        missing = [
            index for index, reply in enumerate(replies[: len(calls)]) if isinstance(reply, NoScriptError)
        ]
        if missing:
            await self._client.script_load(self._script.script)
            again = await self._send([*(calls[index] for index in missing), *tail], slot)
            for index, reply in zip(missing, again, strict=False):
                replies[index] = reply
            if tail:
                replies[-1] = again[-1]
        return replies

    @staticmethod
    async def _connect_to_primary(connection: Connection) -> None:
        """(Re)connect, and make sure the server is a primary: around a failover the address
        Sentinel gave (or a plain URL's server) may be a replica by now, where every batch
        would fail until the connection happens to drop."""
        await connection.connect()  # type: ignore[no-untyped-call]
        await connection.send_command("ROLE")
        role = await connection.read_response()
        if not isinstance(role, list) or role[0] != b"master":
            raise RedisConnectionError("the server is a replica now")

    async def _send(self, calls: list[bytes], slot: int) -> list[object]:
        """Send the calls in one write on the flusher's own connection (kept from batch to
        batch: taking one from the pool checks it each time) and read one reply per call."""
        connection = self._connections[slot]
        if connection is None:
            connection = self._connections[slot] = await self._client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            if not connection.is_connected:
                await self._connect_to_primary(connection)
            await connection.send_packed_command(b"".join(calls))
            replies: list[object] = []
            for _ in calls:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            await connection.disconnect(nowait=True)  # replies may still be in flight
            raise
