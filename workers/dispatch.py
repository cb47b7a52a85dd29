"""`run_event`: the RQ job function of every queued event. It runs the event's handlers and
tells the worker what happens next (see `workers.retry`).

Retries are per (event, handler): handlers that succeeded are remembered in
`Keys.handler_done(event_id)` and skipped when the job runs again; failed attempts are
counted in `Keys.handler_attempts(event_id)`. Both are read only when the job has run before
and written only when it will run again, so the common case (first run, every handler
succeeds) costs no Redis round trip at all.
"""

from __future__ import annotations

import importlib
import inspect
import random
import time
from typing import Any

from shared.events import Event
from workers import context, registry
from workers.guards import LoopCut
from workers.retry import Action, Defer, GiveUp, HandlerResult, Park, Policy, Reschedule, classify, combine

RUN_EVENT = "workers.dispatch.run_event"
_GIVEN_UP = -1  # attempts-hash value of a handler that failed for good (not run again)


def _call(handler: registry.Handler, event: Event) -> None:
    if handler.is_async:
        context.run_coroutine(handler.fn(event, context.make_async_client(event)))
        return
    result = handler.fn(event, context.make_client(event))
    if inspect.isawaitable(result):
        context.run_coroutine(result)


def _prior_state(ctx: context.WorkerContext, event_id: str) -> tuple[set[str], dict[str, int]]:
    if ctx.runs == 1:
        return set(), {}
    with ctx.redis.pipeline(transaction=False) as pipe:
        pipe.smembers(ctx.keys.handler_done(event_id))
        pipe.hgetall(ctx.keys.handler_attempts(event_id))
        done_raw, attempts_raw = pipe.execute()
    done = {item.decode() for item in done_raw}
    attempts = {key.decode(): int(value) for key, value in attempts_raw.items()}
    return done, attempts


def run_event(event_dict: dict[str, Any]) -> str:
    """Run every handler of one event. Returns "ok" or "no_handler"; raises a `JobOutcome`
    when the job must run again later, be parked or fail."""
    ctx = context.current()
    event = Event.model_validate(event_dict)
    if event.name.upper() == "ONAPPUNINSTALL":
        # workers.lifecycle (install verification, uninstall) is imported only when needed
        importlib.import_module("workers.lifecycle").confirm_uninstall(event_dict)
    handlers = registry.handlers_for(event.name)
    if not handlers:
        return "no_handler"
    if ctx.runs <= 1 and not event.is_lifecycle and ctx.echo_guard.consume(event):
        return "echo"  # the echo of our own write: one mark used up, nothing dispatched
    try:
        ctx.loop_breaker.check(event)
    except LoopCut as cut:
        raise GiveUp(str(cut)) from None

    settings = ctx.settings
    policy = Policy(settings.max_attempts, settings.retry_base, settings.retry_max)
    label = registry.event_label(event.name)
    done, attempts = _prior_state(ctx, event.id)
    results: list[HandlerResult] = []
    succeeded: list[str] = []
    counts: dict[Any, int] = {}
    for entry in handlers:
        if entry.id in done:
            continue
        prior = attempts.get(entry.id, 0)
        if prior == _GIVEN_UP:
            results.append(HandlerResult(Action.FAIL, reason=f"{entry.id} failed permanently earlier"))
            continue
        started = time.perf_counter()
        error: Exception | None = None
        try:
            _call(entry, event.model_copy(update={"attempt": prior + 1}))
        except Exception as exc:  # every handler failure is classified, none escapes
            error = exc
        if ctx.metrics is not None:
            ctx.metrics.handler_seconds.labels(label).observe(time.perf_counter() - started)
        result = classify(error, prior + 1, policy, random.random())
        if result.action is not Action.DONE and result.reason:
            result = HandlerResult(
                result.action, result.after, f"{entry.id}: {result.reason}", result.rate_limited
            )
        results.append(result)
        if result.action is Action.DONE:
            succeeded.append(entry.id)
        elif result.action is Action.RETRY:
            counts[entry.id] = prior + 1
        elif result.action is Action.FAIL:
            counts[entry.id] = _GIVEN_UP

    decision = combine(results)
    done_key, attempts_key = ctx.keys.handler_done(event.id), ctx.keys.handler_attempts(event.id)
    if decision.action is Action.DONE:
        if done or attempts:
            ctx.redis.delete(done_key, attempts_key)
        return "ok"

    keep = settings.failed_ttl + int(settings.retry_max) + 3600
    with ctx.redis.pipeline(transaction=False) as pipe:
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

    if decision.action is Action.PARK:
        raise Park(event.member_id, decision.reason)
    if decision.action is Action.DEFER:
        raise Defer(event.member_id, decision.after, decision.rate_limited, decision.reason)
    if decision.action is Action.RETRY:
        raise Reschedule(decision.after, decision.reason)
    raise GiveUp(decision.reason)
