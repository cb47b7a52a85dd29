"""Lua scripts for the Redis atomics b24pipe relies on, one script per `.lua` file here."""

from __future__ import annotations

from importlib.resources import files


def source(name: str) -> str:
    """The text of `shared/lua/<name>.lua` (shipped as package data)."""
    return files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
