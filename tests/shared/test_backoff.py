"""The one backoff: doubling from the base up to the cap, equal or full jitter from a given draw."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from b24pipe.commands.run import RESTART_BASE, RESTART_CAP
from shared.backoff import backoff
from shared.jobs import LIFECYCLE_RETRY_BASE
from shared.settings import Settings
from workers.portals.lifecycle import next_delay
from workers.rest.layers import RESEND_BASE, RESEND_CAP
from workers.runner.outage import RECONNECT_BASE, RECONNECT_CAP


def test_the_delay_doubles_per_failure_up_to_the_cap() -> None:
    assert [backoff(n, 2.0, 20.0) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 20.0]


def test_fewer_than_one_failure_reads_as_the_first() -> None:
    assert backoff(0, 2.0, 60.0) == backoff(-3, 2.0, 60.0) == 2.0


def test_the_doublings_stop_at_60_so_the_float_stays_finite() -> None:
    assert backoff(10_000, 1.0, float("inf")) == 2.0**60


@given(st.integers(min_value=1, max_value=1000), st.floats(min_value=0, max_value=1))
def test_equal_jitter_keeps_half_of_the_delay_fixed(failures: int, rand: float) -> None:
    full = backoff(failures, 2.0, 3600.0)
    assert full / 2 <= backoff(failures, 2.0, 3600.0, rand) <= full <= 3600.0


@given(st.integers(min_value=1, max_value=1000), st.floats(min_value=0, max_value=1))
def test_full_jitter_spans_zero_to_the_delay(failures: int, rand: float) -> None:
    full = backoff(failures, 1.0, 8.0)
    assert backoff(failures, 1.0, 8.0, rand, jitter="full") == pytest.approx(full * rand)


def test_the_draw_sets_the_point_in_the_range_and_is_clamped() -> None:
    assert backoff(3, 2.0, 60.0, 0.0) == 4.0 and backoff(3, 2.0, 60.0, 0.5) == 6.0
    assert backoff(3, 2.0, 60.0, 0.0, jitter="full") == 0.0
    assert backoff(1, 2.0, 60.0, 1.5) == 2.0 and backoff(1, 2.0, 60.0, -1.0) == 1.0


def test_callers_keep_their_numbers() -> None:
    # REST resends: what was a full-jitter draw in [0, min(8, 0.5 * 2**attempt)]
    assert [backoff(n, RESEND_BASE, RESEND_CAP) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    # Redis outages: 0.1-0.2 s first, then up to 2.5-5 s apart
    assert (
        backoff(1, RECONNECT_BASE, RECONNECT_CAP, 0.0) == 0.1
        and backoff(1, RECONNECT_BASE, RECONNECT_CAP) == 0.2
    )
    assert backoff(9, RECONNECT_BASE, RECONNECT_CAP, 0.0) == 2.5
    # `b24pipe run` restarting a component: 1 s, doubling, at most 30 s
    assert [backoff(n, RESTART_BASE, RESTART_CAP) for n in (1, 2, 5, 6)] == [1.0, 2.0, 16.0, 30.0]


def test_install_reverification_waits_5_s_then_doubles_without_jitter(settings: Settings) -> None:
    assert LIFECYCLE_RETRY_BASE == 5.0  # the first wait, scheduled by the ingress
    assert [next_delay(n, 0.0, 0.0, settings) for n in (1, 2, 3)] == [10.0, 20.0, 40.0]
