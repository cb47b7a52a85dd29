"""The benchmarks' knobs: environment variables read once, each with its default and its
lowest sensible value. A bad value stops the benchmark before it starts anything, with one
line naming the variable on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import os
import sys
from typing import overload


@overload
def knob(name: str, default: int, minimum: int = 0) -> int: ...


@overload
def knob(name: str, default: float, minimum: float = 0) -> float: ...


def knob(name: str, default: float, minimum: float = 0) -> float:
    """`name` from the environment, as an int when `default` is one (else a float), at
    least `minimum`; `default` when it is unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    kind = "a whole number" if isinstance(default, int) else "a number"
    try:
        value = int(raw) if isinstance(default, int) else float(raw)
    except ValueError:
        value = None
    if value is None or not value >= minimum:  # `not >=` also refuses nan
        print(f"{name} must be {kind} >= {minimum:g}, not {raw!r}", file=sys.stderr)
        raise SystemExit(2)
    return value
