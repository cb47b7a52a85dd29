"""Bitrix24's request limit: a leaky bucket per portal.

Each request adds 1; the bucket drains `drain` per second; a request that would lift it
above `burst` is refused (HTTP 503 QUERY_LIMIT_EXCEEDED) and adds nothing. Another app on
the same portal and server IP shares the bucket: `foreign_rate` models its steady traffic
and `add_foreign` a burst of it.
"""

from __future__ import annotations


class LeakyBucket:
    def __init__(self, drain: float, burst: float, now: float) -> None:
        self.drain = drain
        self.burst = burst
        self.level = 0.0
        self.foreign_rate = 0.0
        self._at = now

    def _settle(self, now: float) -> None:
        elapsed = max(0.0, now - self._at)
        self._at = now
        self.level = min(self.burst, max(0.0, self.level + (self.foreign_rate - self.drain) * elapsed))

    def level_at(self, now: float) -> float:
        self._settle(now)
        return self.level

    def try_take(self, now: float) -> bool:
        """Admit one request at `now`; False (and no change) when it would overflow."""
        self._settle(now)
        if self.level + 1 > self.burst + 1e-9:
            return False
        self.level += 1
        return True

    def add_foreign(self, units: float, now: float) -> None:
        self._settle(now)
        self.level = min(self.burst, self.level + units)
