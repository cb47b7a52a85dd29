"""The worker's Lua scripts (workers/lua/*.lua), read from the package and registered once per
Redis client: redis-py then calls them by SHA (EVALSHA) and reloads them if the server forgot."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.commands.core import Script

from workers.luascripts import source


@dataclass(frozen=True)
class Scripts:
    fetch: Script
    ack: Script
    maintain: Script

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        return cls(
            fetch=client.register_script(source("fetch")),
            ack=client.register_script(source("ack")),
            maintain=client.register_script(source("maintain")),
        )
