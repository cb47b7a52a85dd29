"""Property tests that report how often they reach the branch they exist for.

A property test that returns early on the uninteresting branch passes just as well when its
generator never reaches the interesting one. `reaches` makes that a failure:

    @reaches(parsed=0.2, refused=0.05)
    @given(...)
    def test_x(...):
        ...
        branch("parsed")

Each example that calls `branch(name)` counts for that branch (and is reported to
hypothesis with `event`, so `--hypothesis-show-statistics` shows the split); after all
examples ran, a branch reached by less than its share of them fails the test, naming the
branch and the figures.
"""

from __future__ import annotations

import contextvars
import functools
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import event

_counts: contextvars.ContextVar[Counter[str] | None] = contextvars.ContextVar("propcoverage", default=None)
_EXAMPLES = "\x00examples"


def branch(name: str) -> None:
    """This example reached `name`."""
    event(name)
    counts = _counts.get()
    if counts is not None:
        counts[name] += 1


def reaches(**shares: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Above `@given`: each named branch must be reached by at least its share of examples."""

    def decorate(test: Callable[..., Any]) -> Callable[..., Any]:
        hypothesis_handle = getattr(test, "hypothesis", None)
        if hypothesis_handle is None:
            raise TypeError("@reaches goes above @given")
        inner = hypothesis_handle.inner_test

        @functools.wraps(inner)
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts = _counts.get()
            if counts is not None:
                counts[_EXAMPLES] += 1
            return inner(*args, **kwargs)

        hypothesis_handle.inner_test = counted

        @functools.wraps(test)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            counts: Counter[str] = Counter()
            token = _counts.set(counts)
            try:
                test(*args, **kwargs)
            finally:
                _counts.reset(token)
            examples = counts[_EXAMPLES]
            short = {
                name: f"{counts[name]}/{examples}"
                for name, share in shares.items()
                if examples == 0 or counts[name] < share * examples
            }
            assert not short, f"the generator rarely reaches {short} (wanted shares: {shares})"

        return wrapper

    return decorate
