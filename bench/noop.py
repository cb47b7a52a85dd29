"""The benchmark's no-op handler. It counts runs per event id in process memory (no Redis
call, so the handler adds no cost), which is how the in-process rounds find lost and
duplicated events."""

from __future__ import annotations

from collections import Counter

from shared.events import Event
from workers import handler

SEEN: Counter[str] = Counter()


@handler("ONBENCHNOOP")
def noop(event: Event, b24: object) -> None:
    SEEN[event.id] += 1
