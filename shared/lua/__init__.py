"""The one loader of b24pipe's Lua scripts, and the one way to register them on a client.

Each script is a `.lua` file beside the code that calls it: `shared/lua/` for the scripts
both sides run, `workers/lua/` for the worker's own. A script is named by that path
(`"workers/lua/fetch.lua"`), the same path its callers' docstrings cite. Each file states its
KEYS and ARGV in its header; scripts that touch RQ's records get RQ's key names as one ARGV
entry (`shared.rqkeys.LUA_ARG`).

`script(client, path)` returns the script registered on that client, made once per client
(as RQ keeps one registered script per connection) and read from the package once per
process: redis-py then runs it by SHA (EVALSHA) and loads it again by itself after a server
restart. The same call serves the synchronous and the asyncio clients.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import overload

import redis
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript, Script

# The client's attribute holding its scripts. A cache beside the clients (even a weak one)
# would keep every client alive: a registered script holds its client.
_CACHE = "_b24pipe_scripts"


@cache
def source(path: str) -> str:
    """The text of the script at `path` (`<package>/lua/<name>.lua`), read from the package."""
    package, _, inside = path.partition("/")
    return resources.files(package).joinpath(inside).read_text(encoding="utf-8")


@overload
def script(client: aioredis.Redis, path: str) -> AsyncScript: ...


@overload
def script(client: redis.Redis, path: str) -> Script: ...


def script(client: redis.Redis | aioredis.Redis, path: str) -> Script | AsyncScript:
    """The script at `path` registered on `client`, registered on first use."""
    known: dict[str, Script | AsyncScript] = vars(client).setdefault(_CACHE, {})
    found = known.get(path)
    if found is None:
        found = known[path] = client.register_script(source(path))
    return found
