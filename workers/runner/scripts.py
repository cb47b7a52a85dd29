"""The worker's Lua scripts (workers/lua/*.lua), read from the package and registered once per
Redis client: redis-py then calls them by SHA (EVALSHA) and reloads them if the server forgot."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.commands.core import Script

from shared import lua


@dataclass(frozen=True)
class Scripts:
    fetch: Script
    ack: Script
    maintain: Script

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        return cls(
            fetch=lua.script(client, "workers/lua/fetch.lua"),
            ack=lua.script(client, "workers/lua/ack.lua"),
            maintain=lua.script(client, "workers/lua/maintain.lua"),
        )
