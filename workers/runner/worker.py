"""The b24pipe worker loop: RQ jobs, taken reliably and acknowledged in batches.

Why not RQ's own worker: listening to several queues, RQ falls back to a bare BLPOP, so a
worker killed right then loses the job, and a dead worker's jobs wait for RQ's 10-minute
sweep; and RQ pays a dozen round trips per job. This loop keeps RQ's data model (one job per
event, RQ's job hashes and registries, so `rq info`, `rq requeue` and rq-dashboard work) but:

- takes up to B24PIPE_FETCH_BATCH jobs per round trip with `fetch.lua`: an atomic LMOVE of
  each id into this worker's in-flight list (lifecycle queue first), registered as started;
  when the queues are empty it blocks on BLMOVE (still a reliable move, into the same list);
- acknowledges finished, failed, rescheduled, deferred and parked jobs together with
  `ack.lua` (at least every 0.1 s, and at the end of each batch in the same round trip as
  the next fetch);
- a heartbeat thread (`maintain.lua`) keeps this worker alive in `Keys.workers`, puts the
  jobs of workers silent for 3/4 of B24PIPE_RECOVERY_AFTER back on their queues, and moves
  due scheduled jobs back to their queues (no `rq worker --with-scheduler` needed) as they
  fall due: it sleeps one tick, or until the earliest scheduled job, whichever is sooner;
- SIGTERM/SIGINT: the current job finishes, taken-but-unstarted jobs go back to the front
  of their queues, acknowledgements are written, then the worker exits;
- RQ's worker record stays true (state idle/busy/suspended, execution index, job counts), a
  failed job gets RQ's FAILED result record, `rq suspend` stops the taking (fetch.lua), and a
  paused portal's jobs are held instead of started (`b24pipe portals pause`).
- a Redis outage (restart, stall, failover) is waited out (`workers.runner.outage`): the worker
  keeps its in-flight list and its unwritten acknowledgements, retries with capped backoff,
  and carries on; a job whose handler met the outage goes back to its queue without using
  an attempt. Liveness is judged by Redis's clock (`maintain.lua`), never a host's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import threading
import time
import traceback
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from types import FrameType
from typing import Any

import redis
from pydantic import ValidationError
from redis.exceptions import NoScriptError
from rq.exceptions import DeserializationError
from rq.serializers import DefaultSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import import_attribute

from shared import lua, rqkeys
from shared.backoff import backoff
from shared.jobs import LEGACY_PATHS, rq_time
from shared.keys import Keys
from shared.logs import log, scrub
from shared.portals import as_text
from shared.redisconn import sync_redis
from shared.settings import Settings
from workers import handlers
from workers.dispatch import RUN_EVENT
from workers.portals import binding, doorbell, keepalive, probe
from workers.runner import context
from workers.runner.acks import (
    Ack,
    DeferAck,
    DoneAck,
    FailAck,
    FrontAck,
    HoldAck,
    ParkAck,
    RetryAck,
    Spacing,
    ack_call,
    schedules,
)
from workers.runner.fairness import SKIP_MARGIN, should_wait_behind
from workers.runner.metrics import OUTCOMES, WorkerMetrics, parse_rq_time
from workers.runner.outage import OUTAGE_ERRORS, Outage
from workers.runner.outcome import Action, JobOutcome, Outcome, Policy
from workers.runner.scripts import Scripts

logger = logging.getLogger("b24pipe.worker")

DEFAULT_RESULT_TTL = 500  # RQ's default: finished jobs stay visible this long
FLUSH_EVERY = 0.1  # seconds between acknowledgement writes inside a long batch
MAX_SKIP = 2000  # jobs of waiting portals one fetch may defer server-side (bounds the script's run time)
IDLE_BLOCK = 1  # seconds one BLMOVE waits on an empty queue (also the longest shutdown delay when idle)
MIN_TICK = 0.1  # seconds between two maintenance ticks at the least
_PICKLE_PROTO = b"\x80"  # the first byte of a pickle of protocol 2 or later; never of zlib data
_PERMANENT_JOB_ERRORS = (ValidationError, DeserializationError, ImportError, AttributeError)


def worker_name() -> str:
    """Unique per process and never reused (an execution id in RQ's registries: no ':')."""
    host = socket.gethostname().replace(":", "-")[:40]
    return f"{host}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


@dataclass
class Taken:
    """One job as `fetch.lua` returns it."""

    id: str
    queue: str
    data: bytes
    timeout: int
    enqueued_at: float | None
    result_ttl: int
    attempts: int
    runs: int
    slot: float | None

    @classmethod
    def from_row(cls, row: list[Any], default_timeout: int) -> Taken:
        job_id, queue, data, timeout, enqueued, result_ttl, attempts, runs, slot = row
        return cls(
            id=job_id.decode(),
            queue=queue.decode(),
            data=data,
            timeout=int(timeout) if timeout else default_timeout,
            enqueued_at=parse_rq_time(enqueued.decode()) if enqueued else None,
            result_ttl=int(result_ttl) if result_ttl else DEFAULT_RESULT_TTL,
            attempts=int(attempts) if attempts else 0,
            runs=int(runs),
            slot=float(slot) if slot else None,
        )

    @cached_property
    def call(self) -> tuple[str, Any, Any, Any]:
        """(function name, instance, args, kwargs), decoded once (raises on a corrupt job)."""
        func_name, instance, args, kwargs = DefaultSerializer.loads(_unpack(self.data))
        return func_name, instance, args, kwargs

    @property
    def event(self) -> dict[str, Any] | None:
        """The event of a `run_event` job (its queued form), None for any other (or
        unreadable) job."""
        try:
            func_name, _, args, _ = self.call
        except Exception:  # a corrupt job fails in _run_one, with its reason
            return None
        if func_name == RUN_EVENT and args and isinstance(args[0], dict):
            return args[0]
        return None

    @property
    def event_id(self) -> str | None:
        event = self.event
        return str(event["id"]) if event and event.get("id") else None


class Worker:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis | None = None,
        *,
        burst: bool = False,
        metrics: WorkerMetrics | None = None,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or sync_redis(settings)
        self.keys = Keys(settings.namespace)
        self.name = name or worker_name()
        self.outage = Outage(logger, worker=self.name)
        self._reclaim = False  # after an outage: the in-flight list is re-checked before fetching
        self.burst = burst
        self.metrics = metrics or WorkerMetrics()
        self.scripts = Scripts.register(self.client)
        self.queue_names = list(self.keys.queues)
        self.inflight = self.keys.inflight(self.name)
        self.policy = Policy(settings.max_attempts, settings.retry_base, settings.retry_max)
        self.registry_ttl = settings.job_timeout + settings.recovery_after + 60
        self.dead_after = settings.recovery_after * 0.75
        self.tick = max(0.2, min(5.0, settings.recovery_after / 8))
        self.stopping = threading.Event()
        self.horizons: dict[str, float] = {}
        self._acks: list[Ack] = []
        self._last_flush = time.monotonic()
        self._functions: dict[str, Callable[..., Any]] = {}
        self._maintainer: threading.Thread | None = None
        self._maintainer_stop = threading.Event()
        self._maintainer_nudge = threading.Event()  # a job was scheduled: look again soon
        self._keepalive_thread: threading.Thread | None = None
        self.processed = 0
        self.suspended = False  # `rq suspend` seen at the last fetch
        self._timed: Taken | None = None  # the job whose timeout the alarm is set for

    # --- lifecycle -------------------------------------------------------------------------
    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """Warm shutdown: finish the current job, give the rest back, exit."""
        self.stopping.set()

    def work(self) -> int:
        """Serve the queues until stopped (or, with burst, until they are empty)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
            # once, not per job as RQ's UnixSignalDeathPenalty does: its two signal() calls
            # cost a no-op job a tenth of its run (the alarm itself is set per job, in _call)
            signal.signal(signal.SIGALRM, self._job_timed_out)
        job_context = context.JobContext(self.client, self.keys, self.settings, metrics=self.metrics)
        context.install(job_context)
        self._waiting_out_outages(lambda: self._maintain(self.client))  # registered and alive first
        self._maintainer = threading.Thread(
            target=self._maintenance_loop, name="b24pipe-heartbeat", daemon=True
        )
        self._maintainer.start()
        log(logger, logging.INFO, "worker started", worker=self.name, queues=",".join(self.queue_names))
        try:
            self._loop(job_context)
        finally:
            self._maintainer_stop.set()
            self._maintainer_nudge.set()
            self._maintainer.join(timeout=10)
            try:
                self._flush()
                self._deregister()
            except OUTAGE_ERRORS:
                # stopped while Redis is away: the jobs still in the in-flight list are
                # recovered (and run again) once this worker is seen dead
                log(logger, logging.WARNING, "worker stopped without reaching redis", worker=self.name)
            log(logger, logging.INFO, "worker stopped", worker=self.name, processed=self.processed)
        return 0

    def _waiting_out_outages(self, step: Callable[[], object]) -> None:
        """Run `step` until it gets through Redis or the worker is asked to stop."""
        while not self.stopping.is_set():
            try:
                step()
            except OUTAGE_ERRORS as exc:
                self.stopping.wait(self.outage.failed(exc))
                continue
            self.outage.recovered()
            return

    def _deregister(self) -> None:
        wkey = rqkeys.worker(self.name)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hdel(self.keys.workers, self.name)
            pipe.delete(wkey, wkey + rqkeys.WORKER_EXECUTIONS)
            pipe.srem(rqkeys.WORKERS, wkey)
            for queue in self.queue_names:
                pipe.srem(rqkeys.workers_of(queue), wkey)
            pipe.execute()

    # --- maintenance (heartbeat thread) ---------------------------------------------------
    def _maintenance_loop(self) -> None:
        client = sync_redis(self.settings)
        keepalive_at = time.monotonic()
        wait = self.tick
        try:
            while True:
                self._maintainer_nudge.wait(wait)
                self._maintainer_nudge.clear()
                # however often jobs are scheduled, at most one tick per MIN_TICK
                if self._maintainer_stop.wait(MIN_TICK):
                    break
                try:
                    next_due = self._maintain(client)
                    self.outage.recovered()
                    wait = next_wait(time.time(), next_due, self.tick)
                    doorbell.poll(self.settings, client)  # Redis only: rings the portals due
                    if time.monotonic() >= keepalive_at:
                        keepalive_at = time.monotonic() + periodic_every(self.settings)
                        self._keepalive()
                except OUTAGE_ERRORS as exc:
                    wait = min(self.tick, self.outage.failed(exc))
                except redis.RedisError as exc:
                    wait = self.tick
                    log(logger, logging.WARNING, "heartbeat failed", worker=self.name, error=str(exc))
        finally:
            client.close()

    def _keepalive(self) -> None:
        """The passes one worker per interval runs: keep-alive refreshes, the binding check and
        the delivery probe. Every worker asks; each pass's lock lets one per interval run it.
        They run on their own thread so their I/O never delays this worker's heartbeat."""
        if self._keepalive_thread is not None and self._keepalive_thread.is_alive():
            return

        def run() -> None:
            client = sync_redis(self.settings)
            try:
                keepalive.run(self.settings, client)
                binding.periodic(self.settings, client)
                probe.periodic(self.settings, client)
            except OUTAGE_ERRORS as exc:  # the next pass (an interval later) tries again
                self.outage.failed(exc)
            except redis.RedisError as exc:
                log(logger, logging.WARNING, "keep-alive failed", worker=self.name, error=str(exc))
            finally:
                client.close()

        self._keepalive_thread = threading.Thread(target=run, name="b24pipe-keepalive", daemon=True)
        self._keepalive_thread.start()

    def _maintain(self, client: redis.Redis) -> float | None:
        """One maintenance tick; returns when the earliest scheduled job falls due (None:
        nothing is scheduled)."""
        now = time.time()
        script = lua.script(client, "workers/lua/maintain.lua")  # the heartbeat thread has its own client
        recovered, _promoted, next_due = script(
            keys=[self.keys.workers, self.keys.defer_horizon, self.keys.workers_clock],
            args=[
                self.name,
                now,
                self.dead_after,
                self.keys.inflight(""),
                self.registry_ttl,
                1000,
                ",".join(self.queue_names),
                rq_time(now),
                os.getpid(),
                socket.gethostname(),
                rqkeys.LUA_ARG,
                *self.queue_names,
            ],
        )
        if recovered:
            self.metrics.recovered.inc(int(recovered))
            log(
                logger,
                logging.WARNING,
                "recovered jobs of a dead worker",
                worker=self.name,
                jobs=int(recovered),
            )
        return float(next_due) if next_due else None

    # --- the loop --------------------------------------------------------------------------
    def _loop(self, job_context: context.JobContext) -> None:
        while not self.stopping.is_set():
            try:
                if not self._round(job_context):
                    return
            except OUTAGE_ERRORS as exc:
                self._reclaim = True
                self.stopping.wait(self.outage.failed(exc))
                continue
            self.outage.recovered()

    def _round(self, job_context: context.JobContext) -> bool:
        """The last batch's acknowledgements (or those left over from an outage) and the next
        fetch, then that batch; False when a burst worker found the queues empty or the
        workers are suspended."""
        if self._reclaim:
            self._flush()
            self._give_back_orphans()
            self._reclaim = False
        jobs = self._flush_and_fetch()
        if self.suspended:  # `rq suspend`: take nothing until `rq resume` (burst: stop, as RQ does)
            if self.burst:
                return False
            self.stopping.wait(IDLE_BLOCK)
            return True
        if not jobs:
            if self.burst:
                return False
            events_key = rqkeys.queue(self.keys.events_queue)
            claimed = self.client.blmove(events_key, self.inflight, IDLE_BLOCK, "LEFT", "RIGHT")
            if claimed is None:
                return True
            jobs = self._fetch(claimed.decode() if isinstance(claimed, bytes) else str(claimed))
            if self.suspended:  # the claimed job went back to the front of its queue
                return True
        self._run_batch(jobs, job_context)
        return True

    def _give_back_orphans(self) -> None:
        """After an outage this worker runs nothing and owes no acknowledgement, so anything
        in its in-flight list is a job it does not know it holds: a fetch or BLMOVE that Redis
        ran after the client gave up on the reply, or the list as a new primary has it after a
        failover. Trusting the list as it was would strand them; they go back to the front of
        their queues (at worst a job runs twice: at-least-once)."""
        ids = [as_text(job_id) for job_id in self.client.lrange(self.inflight, 0, -1)]
        if not ids:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(rqkeys.job(job_id), "origin")
            queues = pipe.execute()
        self._acks.extend(
            FrontAck(job_id, as_text(queue) if queue else self.keys.events_queue)
            for job_id, queue in zip(ids, queues, strict=True)
        )
        log(logger, logging.WARNING, "jobs given back after an outage", worker=self.name, jobs=len(ids))
        self._flush()

    def _fetch(self, claimed: str | None) -> list[Taken]:
        return self._taken(self.scripts.fetch(*self._fetch_call(claimed)))

    def _flush_and_fetch(self) -> list[Taken]:
        """Write the acknowledgements and fetch the next batch in one round trip: a job queued
        while the last batch ran is taken one round trip sooner. ack.lua runs first, so the
        fetch sees the horizons the batch's deferrals moved (fairness)."""
        if not self._acks:
            return self._fetch(None)
        ack_keys, ack_args = self._ack_call()
        fetch_keys, fetch_args = self._fetch_call(None)
        with self.client.pipeline(transaction=False) as pipe:
            # EVALSHA, not the Script objects: a pipeline of those sends SCRIPT EXISTS first,
            # the round trip this saves. A script Redis does not have yet (never run since it
            # started) answers NoScriptError and is loaded below.
            pipe.evalsha(self.scripts.ack.sha, len(ack_keys), *ack_keys, *ack_args)
            pipe.evalsha(self.scripts.fetch.sha, len(fetch_keys), *fetch_keys, *fetch_args)
            acked, fetched = pipe.execute(raise_on_error=False)
        if isinstance(acked, NoScriptError):
            self._flush()
        elif isinstance(acked, Exception):  # an outage: the acknowledgements are sent again
            raise acked
        else:
            self._acked()
        if isinstance(fetched, NoScriptError):
            return self._fetch(None)
        if isinstance(fetched, Exception):
            raise fetched
        jobs = self._taken(fetched)
        if isinstance(acked, NoScriptError):
            # that fetch ran before the acknowledgements: the horizons it saw may miss the
            # batch's deferrals, which the worker-side check (should_wait_behind) needs
            self.horizons = _horizons(self.client.hgetall(self.keys.defer_horizon))
        return jobs

    def _fetch_call(self, claimed: str | None) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of one fetch.lua call (`claimed`: the id BLMOVE already moved)."""
        now = time.time()
        return (
            [self.inflight, self.keys.defer_horizon, *map(rqkeys.queue, self.queue_names)],
            [
                self.settings.fetch_batch,
                self.name,
                now,
                rq_time(now),
                self.registry_ttl,
                claimed or "",
                self.keys.events_queue,
                MAX_SKIP,
                SKIP_MARGIN,
                self.keys.paused_portals,
                self.keys.held(""),
                rqkeys.LUA_ARG,
                *self.queue_names,
            ],
        )

    def _taken(self, reply: list[Any]) -> list[Taken]:
        """The jobs of a fetch.lua reply; notes the horizons and `rq suspend` it saw."""
        rows, horizons, skipped, suspended = reply
        if skipped:
            self.metrics.deferrals.labels("other", "portal_waiting").inc(int(skipped))
        self.horizons = _horizons(dict(zip(horizons[::2], horizons[1::2], strict=True)))
        self.suspended = bool(suspended)
        jobs = [Taken.from_row(row, self.settings.job_timeout) for row in rows]
        self.metrics.in_progress.set(len(jobs))
        return jobs

    def _run_batch(self, jobs: list[Taken], job_context: context.JobContext) -> None:
        self._note_taken(jobs)
        for position, job in enumerate(jobs):
            if self.stopping.is_set():
                for rest in reversed(jobs[position:]):
                    self._acks.append(FrontAck(rest.id, rest.queue))
                break
            try:
                self._acks.append(self._run_one(job, job_context))
            except OUTAGE_ERRORS:
                # the handler met the outage: this job and the rest go back, no attempt used
                for rest in reversed(jobs[position:]):
                    self._acks.append(FrontAck(rest.id, rest.queue))
                raise
            self.processed += 1
            self.metrics.in_progress.dec()
            if time.monotonic() - self._last_flush >= FLUSH_EVERY:
                with contextlib.suppress(*OUTAGE_ERRORS):  # kept for the next round's flush
                    self._flush()

    def _note_taken(self, jobs: list[Taken]) -> None:
        """Two notes per batch, in one round trip.

        The ingress drops a delivery identical to an event *already queued* (same portal,
        event, entity and second). Once taken, the event is no longer queued: a later
        identical delivery is a new change (a second edit within the same second) that the
        running handler may not have seen, so its de-duplication key goes.

        Each portal's newest event received (`Keys.last_event`, for `portals doctor`): a
        portal that stopped sending looks different from a quiet one only by that age."""
        events = [event for job in jobs if (event := job.event) is not None]
        if not events:
            return
        stale = [self.keys.dedupe(str(e["id"])) for e in events if e.get("id")]
        newest: dict[str, float] = {}
        for e in events:
            member, at = str(e.get("member_id", "")), float(e.get("received_at") or 0)
            if member and at > newest.get(member, 0.0):
                newest[member] = at
        with self.client.pipeline(transaction=False) as pipe:
            if stale and self.settings.dedupe_window > 0:
                pipe.delete(*stale)
            if newest:
                pipe.hset(self.keys.last_event, mapping=newest)  # type: ignore[arg-type]
            pipe.execute()

    def _flush(self) -> None:
        if not self._acks:
            return
        self.scripts.ack(*self._ack_call())
        self._acked()

    def _ack_call(self) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of the ack.lua call writing the pending acknowledgements."""
        return ack_call(self._acks, self.keys, worker=self.name, inflight=self.inflight, now=time.time())

    def _acked(self) -> None:
        """The pending acknowledgements were written."""
        if any(schedules(ack) for ack in self._acks):
            self._maintainer_nudge.set()  # its due time may come before the next tick
        self._acks.clear()
        self._last_flush = time.monotonic()

    # --- one job ---------------------------------------------------------------------------
    def _function(self, name: str) -> Callable[..., Any]:
        found = self._functions.get(name)
        if found is None:
            found = self._functions[name] = import_attribute(LEGACY_PATHS.get(name, name))
        return found

    def _run_one(self, job: Taken, job_context: context.JobContext) -> Ack:
        now = time.time()
        label = "job"
        try:
            func_name, instance, args, kwargs = job.call
            event = job.event
            if event is not None:
                label = handlers.event_label(str(event.get("name", "")))
                member = str(event.get("member_id", ""))
                if should_wait_behind(self.horizons.get(member), job.slot, now):
                    self.metrics.deferrals.labels(label, "portal_waiting").inc()
                    return DeferAck(job.id, job.queue, member, 0, Spacing.SKIP)
            if job.enqueued_at is not None:
                self.metrics.queue_wait.labels(job.queue).observe(max(0.0, now - job.enqueued_at))
            job_context.runs, job_context.id = job.runs, job.id
            function = getattr(instance, func_name) if instance is not None else self._function(func_name)
            returned = self._call(function, args, kwargs, job)
        except JobOutcome as exc:
            return self._ack_for(job, label, exc.outcome, now)
        except OUTAGE_ERRORS:
            raise
        except Exception as exc:  # any other job error: generic retry with backoff, then failed
            text = "".join(traceback.format_exception(exc))
            attempts = job.attempts + 1
            if isinstance(exc, _PERMANENT_JOB_ERRORS) or attempts >= self.settings.max_attempts:
                return self._fail(job, label, text)
            self.metrics.retries.labels(label).inc()
            self.metrics.jobs.labels(label, "retry").inc()
            delay = backoff(attempts, self.policy.base, self.policy.cap, _rand())
            return RetryAck(job.id, job.queue, time.time() + delay, attempts)
        # what the job function returned ("ok", "echo", "merged"...) is the reason it is done
        return self._ack_for(job, label, Outcome(Action.DONE, reason=str(returned)), now)

    def _ack_for(self, job: Taken, label: str, outcome: Outcome, now: float) -> Ack:
        """The acknowledgement of the job's `outcome` (its action is the ack's verb), counted."""
        action = outcome.action
        if action is Action.DONE:
            self.metrics.jobs.labels(label, outcome.reason if outcome.reason in OUTCOMES else "ok").inc()
            return DoneAck(job.id, job.queue, self._finished_ttl(job))
        if action is Action.HOLD:
            self.metrics.deferrals.labels(label, "coalescing").inc()
            self.metrics.jobs.labels(label, "deferred").inc()
            return HoldAck(job.id, job.queue, time.time() + outcome.after if outcome.after > 0 else None)
        if action is Action.RETRY:
            self.metrics.retries.labels(label).inc()
            self.metrics.jobs.labels(label, "retry").inc()
            return RetryAck(job.id, job.queue, time.time() + outcome.after)
        member = outcome.member_id
        if action is Action.DEFER:
            self.metrics.deferrals.labels(
                label, "rate_limited" if outcome.rate_limited else "operating_limit"
            ).inc()
            self.metrics.jobs.labels(label, "deferred").inc()
            if outcome.rate_limited and job.slot is None:
                self.horizons[member] = max(self.horizons.get(member, 0.0), now + 2 * outcome.after)
                return DeferAck(job.id, job.queue, member, outcome.after, Spacing.FIRST)
            return DeferAck(job.id, job.queue, member, outcome.after, Spacing.AGAIN)
        if action is Action.PARK:
            self.metrics.jobs.labels(label, "parked").inc()
            log(
                logger,
                logging.WARNING,
                "job parked: portal needs re-authorization",
                job=job.id,
                event_id=job.event_id or "",
                member_id=member,
            )
            return ParkAck(job.id, job.queue, member)
        return self._fail(job, label, outcome.reason)

    def _finished_ttl(self, job: Taken) -> int:
        """How long a handled job stays in RQ's FinishedJobRegistry: its result TTL, or
        B24PIPE_EVENT_LOG_TTL when that is longer (for `b24pipe replay --handled`)."""
        log_ttl = self.settings.event_log_ttl
        if log_ttl and job.event is not None and 0 <= job.result_ttl < log_ttl:
            return log_ttl
        return job.result_ttl

    def _call(self, function: Callable[..., Any], args: Any, kwargs: Any, job: Taken) -> Any:
        """Run the job function, stopped by JobTimeoutException after the job's timeout (as RQ
        does, with SIGALRM: only on the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return function(*args, **kwargs)
        self._timed = job
        signal.alarm(job.timeout)
        try:
            return function(*args, **kwargs)
        finally:
            self._timed = None  # first: an alarm going off now stops nothing
            signal.alarm(0)

    def _job_timed_out(self, signum: int, frame: FrameType | None) -> None:
        """SIGALRM: the running job is over its timeout. Between jobs (an alarm that went off
        as it was cancelled) there is nothing to stop."""
        if self._timed is not None:
            raise JobTimeoutException(f"Task exceeded maximum timeout value ({self._timed.timeout} seconds)")

    def _fail(self, job: Taken, label: str, text: str) -> Ack:
        self.metrics.failures.labels(label).inc()
        self.metrics.jobs.labels(label, "failed").inc()
        log(
            logger,
            logging.WARNING,
            "job failed",
            job=job.id,
            event_id=job.event_id or "",
            queue=job.queue,
            error=scrub(text.strip().splitlines()[-1]),
        )
        return FailAck(
            job.id, job.queue, self.settings.failed_ttl, zlib.compress(scrub(text).encode("utf-8"))
        )


def periodic_every(settings: Settings) -> float:
    """How often a worker asks whether a periodic pass is its turn: often enough for the
    shortest configured interval, at least once a minute."""
    intervals = (settings.keepalive_interval, settings.bind_check_interval, settings.probe_interval)
    return float(min(60, *(i for i in intervals if i > 0)))


def next_wait(now: float, next_due: float | None, tick: float) -> float:
    """How long the heartbeat thread sleeps: one tick, or less when a scheduled job falls due
    sooner, so a retry or a coalescing delay waits what it asked for, not up to a tick more."""
    if next_due is None:
        return tick
    return max(0.0, min(tick, next_due - now))


def _horizons(fields: Mapping[bytes | str, bytes | str]) -> dict[str, float]:
    """Each portal's defer horizon from `Keys.defer_horizon` (without the spacing fields)."""
    named = ((as_text(member), at) for member, at in fields.items())
    return {member: float(at) for member, at in named if not member.endswith(":s")}


def _unpack(data: bytes) -> bytes:
    """RQ stores job data zlib-compressed, the ingress (shared/jobs.py) and older RQ raw."""
    if data[:1] == _PICKLE_PROTO:  # raw: no failed decompress (an exception) per job
        return data
    try:
        return zlib.decompress(data)
    except zlib.error:
        return data


def _rand() -> float:
    return random.random()
