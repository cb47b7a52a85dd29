"""The delivery probe's shared part: how a probe's ONAPPTEST is recognised and recorded.

A worker calls `event.test` on each portal with a fresh marker (`workers.portals.probe`) after
storing it in `Keys.probe(member_id)`; Bitrix24 sends ONAPPTEST through its queue server
with `data[QUERY]` echoing the call's parameters. The ingress, once the event passed the
token check like any other, records the arrival (`arrived`): the marker is cleared and the
latency kept, once, even if Bitrix24 delivers the event twice. Ordinary events pay only the
comparison of their name with ONAPPTEST.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from shared import lua
from shared.keys import Keys

PROBE_EVENT = "ONAPPTEST"
MARKER = "b24pipe_probe"  # the event.test parameter carrying the marker


def marker_of(payload: dict[str, Any]) -> str | None:
    """The probe marker in an ONAPPTEST's `data[QUERY]`, if it carries one."""
    data = payload.get("data")
    query = data.get("QUERY") if isinstance(data, dict) else None
    marker = query.get(MARKER) if isinstance(query, dict) else None
    return marker if isinstance(marker, str) and marker else None


class Arrivals:
    """Records probe arrivals in Redis (one script call each)."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._script = lua.script(client, "shared/lua/probe_arrived.lua")
        self._keys = keys

    async def record(self, member_id: str, marker: str, now: float) -> float | None:
        """The latency of the probe `marker` names, or None when it is not one in flight."""
        sent = await self._script(keys=[self._keys.probe(member_id)], args=[marker, now])
        if sent is None:
            return None
        return max(0.0, now - float(sent))
