"""Per-method operating time: server seconds spent in the last 10 minutes.

Bitrix24 keeps ten one-minute buckets per (app, method); each answer reports the sum as
`time.operating`. Once the sum reaches the limit (480 s by default), calls of that method
get HTTP 429 OPERATION_TIME_LIMIT until old minutes leave the window; other methods are
unaffected. The simulator charges each call a configurable simulated processing time.
"""

from __future__ import annotations

WINDOW_MINUTES = 10
DEFAULT_COSTS: dict[str, float] = {"crm.deal.list": 0.05, "crm.lead.list": 0.05}
DEFAULT_COST = 0.01


class OperatingTime:
    def __init__(self, limit: float = 480.0) -> None:
        self.limit = limit
        self.costs: dict[str, float] = dict(DEFAULT_COSTS)
        self._minutes: dict[str, dict[int, float]] = {}

    def cost(self, method: str) -> float:
        return self.costs.get(method, DEFAULT_COST)

    def _window(self, method: str, now: float) -> dict[int, float]:
        minute = int(now // 60)
        buckets = self._minutes.setdefault(method, {})
        for old in [m for m in buckets if m <= minute - WINDOW_MINUTES]:
            del buckets[old]
        return buckets

    def used(self, method: str, now: float) -> float:
        return round(sum(self._window(method, now).values()), 6)

    def blocked(self, method: str, now: float) -> bool:
        return self.used(method, now) >= self.limit

    def charge(self, method: str, now: float, seconds: float) -> None:
        buckets = self._window(method, now)
        minute = int(now // 60)
        buckets[minute] = buckets.get(minute, 0.0) + seconds

    def reset_at(self, method: str, now: float) -> int:
        """Unix time when the oldest minute with time in it leaves the window."""
        buckets = self._window(method, now)
        oldest = min(buckets) if buckets else int(now // 60)
        return (oldest + WINDOW_MINUTES) * 60
