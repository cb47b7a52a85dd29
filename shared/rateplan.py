"""Rate plans: how fast a portal's Bitrix24 bucket drains and how much it holds (pure).

Here rather than beside the limiter (`workers.rest.ratelimit`) so that the settings can refuse a
bad `B24PIPE_RATE_PLAN` at start-up, before any job runs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from shared.errors import ConfigurationError

_CUSTOM = re.compile(r"^custom:(?P<drain>\d+(?:\.\d+)?)/(?P<burst>\d+)$")
_NAMED = {"standard": (2.0, 50), "enterprise": (5.0, 250)}


class PlanError(ConfigurationError, ValueError):
    """A rate plan that is neither a known name nor `custom:<drain>/<burst>`."""


@dataclass(frozen=True)
class RatePlan:
    drain: float  # requests per second the bucket drains
    burst: int  # requests the bucket holds

    @property
    def limit(self) -> int:
        """The bucket size we fill up to: Bitrix24's minus a headroom for network jitter."""
        headroom = max(1, math.ceil(self.burst * 0.04))
        return max(1, self.burst - headroom)


def parse_plan(text: str) -> RatePlan:
    """`standard`, `enterprise` or `custom:<drain>/<burst>` (e.g. `custom:20/100`)."""
    name = text.strip().lower()
    if name in _NAMED:
        drain, burst = _NAMED[name]
        return RatePlan(drain, burst)
    match = _CUSTOM.match(name)
    if match is None:
        raise PlanError(f"rate plan {text!r} is not standard, enterprise or custom:<drain>/<burst>")
    drain, burst = float(match["drain"]), int(match["burst"])
    if drain <= 0 or burst < 1:
        raise PlanError(f"rate plan {text!r} needs a positive drain and burst")
    return RatePlan(drain, burst)
