"""Pure helpers for REST parameters: field diffs (`update_if_changed`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
