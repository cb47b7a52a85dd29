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

    def _real_elapsed_hidden(self) -> float:
        return 0.0 if self._frozen_at is None else time.monotonic() - self._frozen_at

    def monotonic(self) -> float:
        return time.monotonic() + self.offset - self._real_elapsed_hidden()

    def time(self) -> float:
        return time.time() + self.offset - self._real_elapsed_hidden()

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def freeze(self, frozen: bool) -> None:
        if frozen and self._frozen_at is None:
            self._frozen_at = time.monotonic()
        elif not frozen and self._frozen_at is not None:
            self.offset -= self._real_elapsed_hidden()
            self._frozen_at = None

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None
