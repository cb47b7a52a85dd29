"""The pure decisions of the worker: per-handler classification, the
job's fate from its handlers' results, and when a portal's job waits behind its horizon."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.errors import (
    ApiError,
    AuthRevoked,
    OperatingLimit,
    Permanent,
    RateLimited,
    ReauthRequired,
    Retry,
    ScopeMissing,
)
from workers.runner.fairness import should_wait_behind
from workers.runner.outcome import Action, Outcome, Policy, classify, combine
from workers.runner.worker import next_wait

POLICY = Policy(max_attempts=5, base=2.0, cap=60.0)


def test_classification_follows_the_contract() -> None:
    assert classify(None, 1, POLICY, 0.5).action is Action.DONE
    assert classify(Retry(after=7), 1, POLICY, 0.5) == Outcome(Action.RETRY, 7.0, "Retry: retry after 7s")
    assert classify(RuntimeError("x"), 1, POLICY, 0.5).action is Action.RETRY
    assert classify(RuntimeError("x"), 5, POLICY, 0.5).action is Action.FAIL  # attempts used up
    assert classify(ApiError("INTERNAL"), 2, POLICY, 0.5).action is Action.RETRY
    assert classify(Permanent("no"), 1, POLICY, 0.5).action is Action.FAIL
    assert classify(ScopeMissing("insufficient_scope"), 1, POLICY, 0.5).action is Action.FAIL
    limited = classify(RateLimited(1.5), 5, POLICY, 0.5)  # waiting never uses up attempts
    assert limited.action is Action.DEFER and limited.after == 1.5 and limited.rate_limited
    operating = classify(OperatingLimit(3), 5, POLICY, 0.5)
    assert operating.action is Action.DEFER and not operating.rate_limited
    assert classify(ReauthRequired("invalid_grant"), 1, POLICY, 0.5).action is Action.PARK
    assert classify(AuthRevoked("invalid_token"), 1, POLICY, 0.5).action is Action.PARK


results = st.builds(
    Outcome, st.sampled_from(list(Action)), st.floats(min_value=0, max_value=100), st.text(max_size=5)
)


@given(st.lists(results, max_size=6))
def test_combine_parks_first_then_reschedules_then_fails(items: list[Outcome]) -> None:
    decision = combine(items)
    actions = {item.action for item in items}
    if Action.PARK in actions:
        assert decision.action is Action.PARK
    elif Action.RETRY in actions:
        assert decision.action is Action.RETRY
        waits = (Action.RETRY, Action.DEFER, Action.HOLD)
        assert decision.after == max(i.after for i in items if i.action in waits)
    elif Action.DEFER in actions:
        assert decision.action is Action.DEFER
    elif Action.HOLD in actions:
        assert decision.action is Action.HOLD
    elif Action.FAIL in actions:
        assert decision.action is Action.FAIL
    else:
        assert decision.action is Action.DONE


@given(
    st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
    st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
    st.floats(min_value=0, max_value=1e6),
)
def test_a_job_waits_behind_only_an_ahead_horizon_and_never_past_its_own_slot(
    horizon: float | None, slot: float | None, now: float
) -> None:
    waits = should_wait_behind(horizon, slot, now)
    if horizon is None or horizon <= now + 0.05:
        assert not waits
    if slot is not None and slot <= now + 1.0:
        assert not waits


@given(
    now=st.floats(0, 1e9),
    ahead=st.one_of(st.none(), st.floats(-100, 100)),
    tick=st.floats(0.2, 5),
)
def test_the_heartbeat_wakes_for_the_earliest_scheduled_job(
    now: float, ahead: float | None, tick: float
) -> None:
    wait = next_wait(now, None if ahead is None else now + ahead, tick)
    assert 0 <= wait <= tick
    if ahead is None:
        assert wait == tick  # nothing scheduled: one tick
    elif ahead <= 0:
        assert wait == 0  # already due: at once
    elif ahead < tick:
        assert abs(wait - ahead) < 1e-6  # due before the next tick: then, not a tick later
