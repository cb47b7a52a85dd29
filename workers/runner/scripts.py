"""The job loop's Lua scripts (workers/lua/fetch.lua, ack.lua), registered on the worker's
client: redis-py then calls them by SHA (EVALSHA) and reloads them if the server forgot, and
the worker puts their SHAs in its pipelines. The heartbeat's maintain.lua is registered on
the client that runs it (`shared.lua.script`)."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.commands.core import Script

from shared import lua


@dataclass(frozen=True)
class Scripts:
    fetch: Script
    ack: Script

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        return cls(
            fetch=lua.script(client, "workers/lua/fetch.lua"),
            ack=lua.script(client, "workers/lua/ack.lua"),
        )
