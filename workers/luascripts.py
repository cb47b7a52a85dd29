"""The Lua sources under workers/lua, read once from the installed package.

Callers register them on their own Redis client (`client.register_script(source(name))`):
redis-py then runs them by SHA and reloads them after a server restart by itself.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def source(name: str) -> str:
    """The text of `workers/lua/<name>.lua`."""
    return resources.files("workers").joinpath(f"lua/{name}.lua").read_text(encoding="utf-8")
