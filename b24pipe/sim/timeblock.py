"""The `time` block Bitrix24 adds to every REST answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from b24pipe.sim.portal import Portal


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def time_block(portal: Portal, method: str, start: float, processing: float) -> dict[str, Any]:
    finish = max(portal.clock.time(), start + processing)
    now = portal.clock.time()
    return {
        "start": round(start, 6),
        "finish": round(finish, 6),
        "duration": round(finish - start, 6),
        "processing": round(processing, 6),
        "date_start": _iso(start),
        "date_finish": _iso(finish),
        "operating_reset_at": portal.operating.reset_at(method, now),
        "operating": portal.operating.used(method, now),
    }
