"""The last word of every `make bench-*`: a run that did no real work, or whose comparison
means nothing, exits non-zero, so its figures can never pass for a result.

Each benchmark turns what it measured into a list of problems (a pure function, tested on
made-up results in tests/bench/test_bench_smoke.py) and ends with `verdict(problems)`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def verdict(problems: list[str]) -> int:
    """Print each problem; 1 when there is any (the exit status), else 0."""
    for problem in problems:
        print(f"benchmark FAILED: {problem}")
    return 1 if problems else 0


def non_200(statuses: dict[str, int]) -> dict[str, int]:
    """The answers other than 200, by status, from a status -> count map."""
    return {str(k): int(v) for k, v in statuses.items() if str(k) != "200" and int(v)}


def side_problems(sides: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """The problems of load runs by side (each round's `ok` count and `statuses`): a side that
    accepted no event, or answered other than 200."""
    found = []
    for side, rounds in sides.items():
        if not sum(r["ok"] for r in rounds):
            found.append(f"the {side} side accepted no event")
        others = non_200({k: v for r in rounds for k, v in r["statuses"].items()})
        if others:
            found.append(f"the {side} side answered non-200: {others}")
    return found
