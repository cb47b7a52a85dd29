"""Pure decisions about failures: what one handler's exception means, and what the job as a
whole does next. No I/O here, so every rule is tested directly (and with hypothesis).

Per handler (`classify`):
- no exception -> DONE;
- `Retry(after)` or any other exception -> RETRY (uses an attempt; exponential backoff with
  jitter unless `after` is given), or FAIL once attempts are used up;
- `Permanent`, `ConfigurationError` (retrying cannot mend a setting), non-retryable
  `B24Error` (ScopeMissing, AccessDenied...) -> FAIL;
- `RateLimited`, `OperatingLimit` -> DEFER (waiting is not failure: no attempt used);
- `ReauthRequired`, `AuthRevoked` -> PARK (the portal's jobs wait for a new token).

HOLD is not a failure: the job leads a coalescing group (workers.guards.coalesce) and comes back
after the group's delay, without using an attempt and without touching the portal's
fairness horizon.

Per job (`combine`): PARK beats everything (nothing can succeed for that portal); then a
RETRY, DEFER or HOLD reschedules the job for the handlers still to succeed (in that order of
precedence, after the longest wait); FAIL only once no handler can still succeed; otherwise
DONE.

The job's `Outcome` reaches the worker as a `JobOutcome` exception (a job function's only
way to say more than "done" under RQ's calling convention); the worker turns it into an
acknowledgement (`workers.runner.acks`) and `ack.lua` applies that. `Action` is the one
vocabulary of fates from the handler to the ack.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.backoff import backoff
from workers.errors import (
    AuthRevoked,
    B24Error,
    ConfigurationError,
    OperatingLimit,
    Permanent,
    RateLimited,
    ReauthRequired,
    Retry,
)


class Action(StrEnum):
    DONE = "done"
    RETRY = "retry"
    DEFER = "defer"
    PARK = "park"
    FAIL = "fail"
    HOLD = "hold"


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 5
    base: float = 2.0
    cap: float = 3600.0


@dataclass(frozen=True)
class Outcome:
    """What happens next: to one handler's run (`classify`), or to the whole job (`combine`,
    then raised as a `JobOutcome` and acknowledged by the worker)."""

    action: Action
    after: float = 0.0  # seconds until the job runs again (RETRY, DEFER, HOLD)
    reason: str = ""  # for a job that is DONE: what its function returned ("ok", "echo"...)
    rate_limited: bool = False  # a DEFER caused by the portal's limiter (fairness spreads those)
    member_id: str = ""  # the portal a job's DEFER spreads behind or its PARK waits for


def classify(exc: BaseException | None, attempt: int, policy: Policy, rand: float) -> Outcome:
    """What to do after attempt number `attempt` (1-based) of one handler ended with `exc`."""
    if exc is None:
        return Outcome(Action.DONE)
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (RateLimited, OperatingLimit)):
        return Outcome(Action.DEFER, max(0.0, exc.after), reason, rate_limited=isinstance(exc, RateLimited))
    if isinstance(exc, (ReauthRequired, AuthRevoked)):
        return Outcome(Action.PARK, 0.0, reason)
    if isinstance(exc, (Permanent, ConfigurationError)):
        return Outcome(Action.FAIL, 0.0, reason)
    if isinstance(exc, B24Error) and not exc.retryable:
        return Outcome(Action.FAIL, 0.0, reason)
    if attempt >= policy.max_attempts:
        return Outcome(Action.FAIL, 0.0, f"{reason} (after {attempt} attempts)")
    if isinstance(exc, Retry) and exc.after > 0:
        return Outcome(Action.RETRY, exc.after, reason)
    return Outcome(Action.RETRY, backoff(attempt, policy.base, policy.cap, rand), reason)


def combine(results: list[Outcome]) -> Outcome:
    """The job's next step from its handlers' results (see the module docstring)."""
    parked = [r for r in results if r.action is Action.PARK]
    if parked:
        return parked[0]
    pending = [r for r in results if r.action in (Action.RETRY, Action.DEFER, Action.HOLD)]
    if pending:
        after = max(r.after for r in pending)
        if any(r.action is Action.RETRY for r in pending):
            return Outcome(Action.RETRY, after, "; ".join(r.reason for r in pending if r.reason))
        deferred = [r for r in pending if r.action is Action.DEFER]
        if deferred:
            return Outcome(
                Action.DEFER, after, deferred[0].reason, rate_limited=any(r.rate_limited for r in deferred)
            )
        return Outcome(Action.HOLD, after, "coalescing")
    failed = [r for r in results if r.action is Action.FAIL]
    if failed:
        return Outcome(Action.FAIL, 0.0, "; ".join(r.reason for r in failed))
    return Outcome(Action.DONE)


class JobOutcome(Exception):
    """Raised by a job function (`run_event`, the portal jobs) when the job must not simply
    finish: it carries the job's `Outcome`, which the worker acknowledges
    (`workers.runner.acks`). The subclasses below are its common forms."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class Reschedule(JobOutcome):
    """Run the job again after `after` seconds (an attempt was used)."""

    def __init__(self, after: float, reason: str) -> None:
        super().__init__(Outcome(Action.RETRY, after, reason))


class Defer(JobOutcome):
    """Run the job again after `after` seconds without using an attempt; `rate_limited`
    means the portal's limiter said so, so the portal's next jobs queue behind it."""

    def __init__(self, member_id: str, after: float, rate_limited: bool, reason: str) -> None:
        super().__init__(Outcome(Action.DEFER, after, reason, rate_limited, member_id))


class Park(JobOutcome):
    """The portal needs re-authorization: keep the job until a new token
    arrives (`shared.portalstore.save_portal` releases it)."""

    def __init__(self, member_id: str, reason: str) -> None:
        super().__init__(Outcome(Action.PARK, reason=reason, member_id=member_id))
