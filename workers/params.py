"""Pure helpers for REST parameters: PHP-style query strings (batch commands) and field diffs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}[{key}]" if prefix else str(key), inner)
    elif isinstance(value, list | tuple):
        for index, inner in enumerate(value):
            yield from _flatten(f"{prefix}[{index}]", inner)
    elif isinstance(value, bool):
        yield prefix, "1" if value else "0"
    else:
        yield prefix, str(value)


def http_build_query(params: Mapping[str, Any]) -> str:
    """What PHP's http_build_query makes of `params` (Bitrix24 parses batch commands with it):
    nested keys in brackets, lists indexed, booleans 1/0, None left out."""
    return "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in _flatten("", params))


def _same(have: Any, want: Any) -> bool:
    if isinstance(want, bool):
        want = "Y" if want else "N"
    if isinstance(want, list | tuple):
        return isinstance(have, list | tuple) and len(have) == len(want) and all(map(_same, have, want))
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(_same(have.get(k), v) for k, v in want.items())
    if want is None or want == "":
        return have is None or have == "" or have == []
    if isinstance(have, bool):
        have = "Y" if have else "N"
    return have is not None and str(have) == str(want)


def changed_fields(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `wanted` whose value differs from `current` (Bitrix24 returns strings:
    5 and "5" are the same, True and "Y" too)."""
    return {key: value for key, value in wanted.items() if not _same(current.get(key), value)}
