"""`run_event`: the RQ job function of every queued event. It runs the event's handlers and
tells the worker what happens next (see `workers.runner.outcome`).

Retries are per (event, handler): handlers that succeeded are remembered in
`Keys.handler_done(event_id)` and skipped when the job runs again; failed attempts are
counted in `Keys.handler_attempts(event_id)`. Both are read only when the job has run before
and written only when it will run again, so the common case (first run, every handler
succeeds) costs no Redis round trip at all. An ONAPPUNINSTALL starts its confirmation
chain (`workers.lifecycle.confirm_uninstall`) before its handlers, remembered the same way,
so each event starts one chain however often its job runs.

Order per job: echo suppression first (an echo of our own write is dropped before anything
else sees it), then per handler: coalescing or batch grouping (`workers.guards.coalesce`: the
handler may be held, merged away, or given the group's events), then the loop breaker on
the events the handler will actually run on, then the handler.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import random
import time
from dataclasses import replace
from typing import Any

from shared import tracing
from shared.events import Event
from shared.jobs import DOORBELL
from workers import handlers
from workers.guards.coalesce import ArrivalVerdict, Grouping
from workers.guards.loop import LoopCut
from workers.runner import context
from workers.runner.outcome import Action, JobOutcome, Outcome, Policy, classify, combine

_logger = logging.getLogger("b24pipe.dispatch")
RUN_EVENT = "workers.dispatch.run_event"
# Lifecycle events queued only once the authorization server vouched for their tokens.
TOKEN_ARRIVALS = frozenset({"ONAPPINSTALL", "ONAPPUPDATE"})
_GIVEN_UP = -1  # attempts-hash value of a handler that failed for good (not run again)
# The uninstall confirmation's entry among an event's done handlers (a handler id is a
# dotted module path, never this)
UNINSTALL_CHECK = "<confirm_uninstall>"


def _call(handler: handlers.Handler, events: tuple[Event, ...]) -> None:
    """Run one handler: on the event, or on the list of events for a batch handler."""
    arg: Event | list[Event] = list(events) if handler.batch else events[0]
    if handler.is_async:
        context.run_coroutine(handler.fn(arg, context.make_async_client(events[0], handler.id)))
        return
    result = handler.fn(arg, context.make_client(events[0], handler.id))
    if inspect.isawaitable(result):
        context.run_coroutine(result)


def _log_failure(entry: handlers.Handler, event: Event, error: Exception, result: Outcome) -> None:
    """The handler's own traceback, for its developer (the formatter scrubs secrets from it).
    Rate-limit deferrals and parking are the pipeline's business and logged elsewhere."""
    _logger.warning(
        "handler failed",
        exc_info=error,
        extra={
            "fields": {
                "handler": entry.id,
                "event": event.name,
                "event_id": event.id,
                "member_id": event.member_id,
                "attempt": event.attempt,
                "next": "retry" if result.action is Action.RETRY else "failed",
            }
        },
    )


def _not_cut(job: context.JobContext, events: tuple[Event, ...]) -> tuple[Event, ...]:
    """The events the loop breaker lets run. A single event that is cut fails the handler
    (parked in the failed registry); in a batch the cut ones are left out of the list, and
    the handler fails only when nothing is left."""
    kept: list[Event] = []
    last: LoopCut | None = None
    for event in events:
        try:
            job.loop_breaker.check(event)
        except LoopCut as cut:
            last = cut
            continue
        kept.append(event)
    if not kept and last is not None:
        raise last
    return tuple(kept)


def _prior_state(job: context.JobContext, event_id: str) -> tuple[set[str], dict[str, int]]:
    if job.runs == 1:
        return set(), {}
    with job.redis.pipeline(transaction=False) as pipe:
        pipe.smembers(job.keys.handler_done(event_id))
        pipe.hgetall(job.keys.handler_attempts(event_id))
        done_raw, attempts_raw = pipe.execute()
    done = {item.decode() for item in done_raw}
    attempts = {key.decode(): int(value) for key, value in attempts_raw.items()}
    return done, attempts


def run_event(event_dict: dict[str, Any]) -> str:
    """The job function of every event: `_run_event` in the event's trace span (a child of
    the ingress request's when the event was queued with a trace context)."""
    if not tracing.enabled():
        return _run_event(event_dict)
    attributes = {
        "b24pipe.event": str(event_dict.get("name", "")),
        "b24pipe.event_id": str(event_dict.get("id", "")),
        "b24pipe.member_id": str(event_dict.get("member_id", "")),
    }
    with tracing.span(
        f"event {attributes['b24pipe.event']}",
        attributes,
        carrier=event_dict.get(tracing.TRACE_FIELD) or {},
        kind="consumer",
    ) as current:
        outcome = _run_event(event_dict)
        current.set_attribute("b24pipe.outcome", outcome)
        return outcome


def _run_event(event_dict: dict[str, Any]) -> str:
    """Run every handler of one event. Returns "ok", "no_handler", "echo" (our own write's
    echo, dropped) or "merged" (every handler's run is another job's); raises a `JobOutcome`
    with the job's `Outcome` when it must run again later (HOLD for a coalescing leader), be
    parked or fail."""
    job = context.current()
    event = Event.model_validate(event_dict)
    done, attempts = _prior_state(job, event.id)
    succeeded: list[str] = []
    if event.name.upper() == "ONAPPUNINSTALL":
        if UNINSTALL_CHECK not in done:
            # workers.portals.lifecycle (install verification, uninstall) is imported only when needed
            importlib.import_module("workers.lifecycle").confirm_uninstall(event_dict)
            # remembered like a handler that succeeded: a retry of this job (a handler
            # failed) must not start a second confirmation chain
            succeeded.append(UNINSTALL_CHECK)
    elif event.name.upper() in TOKEN_ARRIVALS and job.runs <= 1:
        # a verified install, install page or update: the portal's bindings may be gone
        importlib.import_module("workers.portals.binding").schedule(
            job.redis, job.keys, event.member_id, event.name.lower()
        )
    if event.name.upper() == DOORBELL:
        importlib.import_module("workers.portals.doorbell").answer(event)  # the offline queue grew
    matched = handlers.handlers_for(event.name)
    if not matched:
        return "no_handler"
    # An offline row is never our own write's echo (the auth_connector keeps those out of
    # the queue), so it must not use up a mark a person's change would then lose to.
    echo = job.runs <= 1 and not event.is_lifecycle and event.source != "offline"
    if echo and job.echo_guard.consume(event):
        return "echo"  # the echo of our own write: one mark used up, nothing dispatched

    settings = job.settings
    policy = Policy(settings.max_attempts, settings.retry_base, settings.retry_max)
    label = handlers.event_label(event.name)
    results: list[Outcome] = []
    claims: list[str] = []  # grouped handlers that ran on a claimed group
    merged = 0
    counts: dict[Any, int] = {}
    for entry in matched:
        if entry.id in done:
            continue
        prior = attempts.get(entry.id, 0)
        if prior == _GIVEN_UP:
            results.append(Outcome(Action.FAIL, reason=f"{entry.id} failed permanently earlier"))
            continue
        mine = event.model_copy(update={"attempt": prior + 1})
        events: tuple[Event, ...] = (mine,)
        if entry.grouped:
            delay = settings.coalesce_delay if entry.delay is None else entry.delay
            how = Grouping(entry.id, entry.batch, entry.coalesce, delay)
            arrival = job.coalescer.arrive(job.id, mine, how)
            if arrival.verdict is ArrivalVerdict.HOLD:
                results.append(Outcome(Action.HOLD, arrival.after))
                continue
            if arrival.verdict is ArrivalVerdict.MERGED:
                results.append(Outcome(Action.DONE))
                succeeded.append(entry.id)
                merged += 1
                continue
            events = arrival.events
            if job.id is not None and (entry.batch or events[0] is not mine):
                claims.append(entry.id)
        started = time.perf_counter()
        error: Exception | None = None
        try:
            with tracing.span(f"handler {entry.id}", {"b24pipe.handler": entry.id}):
                _call(entry, _not_cut(job, events))
        except Exception as exc:  # every handler failure is classified, none escapes
            error = exc
        if job.metrics is not None:
            job.metrics.handler_seconds.labels(label).observe(time.perf_counter() - started)
        result = classify(error, prior + 1, policy, random.random())
        if result.action is not Action.DONE and result.reason:
            result = replace(result, reason=f"{entry.id}: {result.reason}")
        if error is not None and result.action in (Action.RETRY, Action.FAIL):
            _log_failure(entry, mine, error, result)
        results.append(result)
        if result.action is Action.DONE:
            succeeded.append(entry.id)
        elif result.action is Action.RETRY:
            counts[entry.id] = prior + 1
        elif result.action is Action.FAIL:
            counts[entry.id] = _GIVEN_UP

    decision = combine(results)
    job.coalescer.release(event.member_id, [c for c in claims if c in succeeded], job.id)
    done_key, attempts_key = job.keys.handler_done(event.id), job.keys.handler_attempts(event.id)
    if decision.action is Action.DONE:
        if done or attempts:
            job.redis.delete(done_key, attempts_key)
        return "merged" if merged and merged == len(results) else "ok"

    keep = settings.failed_ttl + int(settings.retry_max) + 3600
    with job.redis.pipeline(transaction=False) as pipe:
        if succeeded:
            pipe.sadd(done_key, *succeeded)
            pipe.expire(done_key, keep)
        if decision.action is Action.FAIL:
            # A requeue from the failed registry starts the failed handlers afresh; the
            # handlers that already succeeded stay done.
            pipe.delete(attempts_key)
        elif counts:
            pipe.hset(attempts_key, mapping=counts)
            pipe.expire(attempts_key, keep)
        pipe.execute()

    raise JobOutcome(replace(decision, member_id=event.member_id))
