"""A small `make bench-writes`: creates through handlers in real worker processes while 10 %
of the committed adds lose their answer. REST 3.0 creates are all done once; v2 creates are
never duplicated by the client, and every lost answer reaches the handler as
`WriteUncertain` and is counted; the naive client, beside them, duplicates."""

from __future__ import annotations

from pathlib import Path

from bench.writes import run, verdict

CREATES = 60


def test_lost_answers_duplicate_nothing_and_are_surfaced(tmp_path: Path) -> None:
    v3, v2, naive = run(CREATES, tmp_path)
    assert v3.created == CREATES and v3.duplicates == 0
    assert v2.duplicates == 0
    assert v2.uncertain == v2.lost and v2.counted == v2.lost  # surfaced and counted, each one
    assert v2.created == CREATES  # a lost answer's write did happen (once)
    assert v3.lost + v2.lost > 0, "no answer was lost: the run proved nothing"
    assert naive.duplicates == naive.lost  # the baseline resends every lost answer
    assert verdict(v3, v2, naive) == []
