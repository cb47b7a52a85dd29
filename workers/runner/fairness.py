"""Fairness across portals: one portal in a storm, or stuck behind its rate limit, must not
hold the workers.

When a portal's limiter says "wait", the job is deferred (no attempt used) into RQ's
ScheduledJobRegistry, and the portal gets a *horizon* in `Keys.defer_horizon`: the time up
to which its deferred jobs are already spread out, one per limiter interval (`ack.lua`).
Every later job of that portal that a worker takes is not run at all while the horizon is
ahead: it is queued behind the horizon in the same cheap acknowledgement round trip. So a
storm of 10,000 events costs the workers one Lua entry each, once, and then comes back at
the rate the portal's limit allows, while other portals' jobs run as soon as they arrive.

Jobs whose RQ hash names their portal (field `b24_member`, written by the ingress at
enqueue: see shared/jobs.py) are deferred by `fetch.lua` without even leaving Redis, a few
microseconds each; jobs without it are deferred by the worker after a look at the event.

A job that was scheduled (it carries its slot) runs when its slot comes, so a deferred
job is never pushed back again by the horizon its own deferral created.
"""

from __future__ import annotations

SKIP_MARGIN = 0.05  # seconds: a horizon this close is not worth a deferral
SLOT_GRACE = 1.0  # seconds: a scheduled job runs when its slot is due within this


def should_wait_behind(horizon: float | None, slot: float | None, now: float) -> bool:
    """True when a job of a portal should be deferred behind the portal's horizon unrun."""
    if horizon is None or horizon <= now + SKIP_MARGIN:
        return False
    return slot is None or slot > now + SLOT_GRACE
