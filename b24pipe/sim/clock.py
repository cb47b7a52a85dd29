"""A virtual clock per portal, so tests move time forward instead of sleeping.

Everything time-based in the simulator (bucket drain, token expiry, operating-time windows,
event `ts`) reads one of these. `advance` shifts it; `freeze` stops it so bucket arithmetic
is exact however slow the machine is.
"""

from __future__ import annotations

import time


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0
        self._frozen_at: float | None = None  # real monotonic time when frozen

    def monotonic(self) -> float:
        base = self._frozen_at if self._frozen_at is not None else time.monotonic()
        return base + self.offset

    def time(self) -> float:
        hidden = 0.0 if self._frozen_at is None else time.monotonic() - self._frozen_at
        return time.time() - hidden + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def freeze(self, frozen: bool) -> None:
        if frozen and self._frozen_at is None:
            self._frozen_at = time.monotonic()
        elif not frozen and self._frozen_at is not None:
            self.offset -= time.monotonic() - self._frozen_at
            self._frozen_at = None

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None
