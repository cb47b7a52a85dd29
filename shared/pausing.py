"""Pausing a portal's processing (`b24pipe portals pause M` / `resume M`).

The ingress keeps accepting the portal's events; workers do not start its jobs but hold them,
in arrival order, in `Keys.held(member)` (workers/lua/fetch.lua); resuming puts them back at
the front of their queues in that order, atomically with lifting the pause
(shared/lua/portal_resume.lua), so no newer event of the portal can overtake them.
"""

from __future__ import annotations

import redis

from shared import lua, rqkeys
from shared.keys import Keys


def pause(client: redis.Redis, keys: Keys, member_id: str) -> bool:
    """Pause; False when it already was."""
    return bool(client.sadd(keys.paused_portals, member_id))


def resume(client: redis.Redis, keys: Keys, member_id: str) -> int:
    """Lift the pause; how many held jobs went back to their queues."""
    resume_script = lua.script(client, "shared/lua/portal_resume.lua")
    return int(
        resume_script(keys=[keys.paused_portals, keys.held(member_id)], args=[member_id, rqkeys.LUA_ARG])
    )
