"""RQ's timestamps: the one `rq_time` writes what RQ itself writes and reads."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from rq.utils import utcformat, utcparse

from shared.jobs import rq_time
from shared.queuestats import parse_rq_time


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_rq_time_is_rqs_own_format_from_a_datetime_or_unix_seconds(moment: datetime) -> None:
    assert rq_time(moment) == utcformat(moment)
    assert utcparse(rq_time(moment)) == moment
    assert rq_time(moment.timestamp()) == rq_time(moment)
    assert parse_rq_time(rq_time(moment)) == moment.timestamp()
