"""Every field of the job-outcome decisions, not only the action: the delay, the reason the
failed registry and the logs show, and the limiter flag; and the outcome exceptions the
worker reads. Found by `make mutate` (workers/runner/outcome.py)."""

from __future__ import annotations

import pytest

from workers.errors import (
    AccessDenied,
    AuthRevoked,
    ConfigurationError,
    OperatingLimit,
    Permanent,
    RateLimited,
    ReauthRequired,
    Retry,
)
from workers.runner.outcome import (
    Action,
    Defer,
    JobOutcome,
    Outcome,
    Park,
    Policy,
    Reschedule,
    classify,
    combine,
)

POLICY = Policy(max_attempts=3, base=2.0, cap=60.0)


def reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RateLimited(0.5), Outcome(Action.DEFER, 0.5, reason(RateLimited(0.5)), rate_limited=True)),
        (RateLimited(-2), Outcome(Action.DEFER, 0.0, reason(RateLimited(-2)), rate_limited=True)),
        (OperatingLimit(3), Outcome(Action.DEFER, 3.0, reason(OperatingLimit(3)))),
        (
            ReauthRequired("invalid_grant"),
            Outcome(Action.PARK, 0.0, reason(ReauthRequired("invalid_grant"))),
        ),
        (AuthRevoked("invalid_token"), Outcome(Action.PARK, 0.0, reason(AuthRevoked("invalid_token")))),
        (Permanent("no"), Outcome(Action.FAIL, 0.0, "Permanent: no")),
        # a setting that no retry can mend
        (ConfigurationError("unset"), Outcome(Action.FAIL, 0.0, "ConfigurationError: unset")),
        (
            AccessDenied("ACCESS_DENIED"),
            Outcome(Action.FAIL, 0.0, reason(AccessDenied("ACCESS_DENIED"))),
        ),
        (Retry(after=0.5), Outcome(Action.RETRY, 0.5, reason(Retry(after=0.5)))),
        # no delay given: the backoff, never an immediate retry (a hot loop)
        (Retry(), Outcome(Action.RETRY, 4.0, reason(Retry()))),
        (RuntimeError("x"), Outcome(Action.RETRY, 4.0, "RuntimeError: x")),
    ],
)
def test_classify_gives_every_field(exc: BaseException, expected: Outcome) -> None:
    assert classify(exc, 2, POLICY, 1.0) == expected


def test_the_retry_delay_is_jittered_by_the_draw() -> None:
    # attempt 2 backs off 4 s; equal jitter keeps half of it and draws the rest
    assert classify(RuntimeError("x"), 2, POLICY, 0.0).after == 2.0
    assert classify(RuntimeError("x"), 2, POLICY, 0.5).after == 3.0
    assert classify(RuntimeError("x"), 2, POLICY, 1.0).after == 4.0


def test_attempts_used_up_fail_with_the_count() -> None:
    assert classify(RuntimeError("x"), 3, POLICY, 0.5) == Outcome(
        Action.FAIL, 0.0, "RuntimeError: x (after 3 attempts)"
    )


def test_combine_gives_every_field() -> None:
    retry = Outcome(Action.RETRY, 2.0, "a")
    silent = Outcome(Action.RETRY, 1.0, "")
    defer = Outcome(Action.DEFER, 5.0, "limited", rate_limited=True)
    operating = Outcome(Action.DEFER, 1.0, "operating")
    hold = Outcome(Action.HOLD, 7.0, "coalescing")
    fail_a, fail_b = Outcome(Action.FAIL, 0.0, "x"), Outcome(Action.FAIL, 0.0, "y")
    assert combine([retry, silent, defer]) == Outcome(Action.RETRY, 5.0, "a; limited")
    assert combine([operating, defer]) == Outcome(Action.DEFER, 5.0, "operating", rate_limited=True)
    assert combine([operating]) == Outcome(Action.DEFER, 1.0, "operating", rate_limited=False)
    assert combine([hold, Outcome(Action.HOLD, 3.0, "coalescing")]) == Outcome(Action.HOLD, 7.0, "coalescing")
    assert combine([fail_a, Outcome(Action.DONE), fail_b]) == Outcome(Action.FAIL, 0.0, "x; y")
    assert combine([Outcome(Action.DONE)]) == Outcome(Action.DONE)


def test_outcome_exceptions_carry_the_job_s_outcome() -> None:
    reschedule = Reschedule(3.0, "why")
    assert isinstance(reschedule, JobOutcome) and str(reschedule) == "why"
    assert reschedule.outcome == Outcome(Action.RETRY, 3.0, "why")
    defer = Defer("m1", 4.0, True, "limited")
    assert defer.outcome == Outcome(Action.DEFER, 4.0, "limited", rate_limited=True, member_id="m1")
    assert str(defer) == "limited"
    park = Park("m2", "reauth")
    assert park.outcome == Outcome(Action.PARK, reason="reauth", member_id="m2") and str(park) == "reauth"
