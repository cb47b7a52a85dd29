"""How long to wait after consecutive failures: the one backoff every retrying part uses.

The delay doubles with each failure from `base` (the wait after the first) up to `cap`.
Jitter spreads the waits of many callers that failed together (a Redis outage, a portal's
5xx burst), so they do not come back in step:

- "equal" (the default): half of the delay fixed, half random, so a retry never comes
  almost at once (job retries, Redis reconnects, component restarts);
- "full": anywhere between 0 and the delay (the REST client's resends, which are cheap and
  short).

The random draw is an argument (`random.random()` at the call site), so the function stays
pure and its tests need no randomness. Without a draw (`rand=1.0`, the default) there is no
jitter: the delay itself, what the install re-verification and uninstall confirmation
schedule (one job per portal, nothing to spread).
"""

from __future__ import annotations

from typing import Literal

Jitter = Literal["equal", "full"]
_MAX_DOUBLINGS = 60  # beyond any cap in seconds; keeps 2.0**n a finite float


def backoff(failures: int, base: float, cap: float, rand: float = 1.0, jitter: Jitter = "equal") -> float:
    """Seconds to wait after `failures` consecutive failures (1 for the first; less reads as
    1): `base * 2**(failures - 1)`, at most `cap`, jittered by `rand` (in [0, 1], clamped)."""
    doublings = min(max(failures, 1) - 1, _MAX_DOUBLINGS)
    delay = min(cap, base * 2.0**doublings)
    draw = min(max(rand, 0.0), 1.0)
    if jitter == "full":
        return delay * draw
    return delay / 2 + delay / 2 * draw
