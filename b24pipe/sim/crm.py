"""CRM deals and leads in memory, with Bitrix24's list semantics.

Lists return 50 items a page with `total` and `next`; `start=-1` skips the count (and
`next`), the fast way through large lists together with `order[ID]=ASC` and
`filter[>ID]=<last>`. Values come back as strings, as Bitrix24 returns them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from b24pipe.sim import errors

PAGE = 50
ENTITIES = ("deal", "lead")
_FILTER = re.compile(r"^(>=|<=|!=|>|<|=|!|%)?([A-Z0-9_]+)$")


@dataclass
class Page:
    items: list[dict[str, Any]]
    total: int | None
    next: int | None


def _stringify(value: Any) -> Any:
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, int | float):
        return str(value)
    return value


def _compare(op: str, have: Any, want: Any) -> bool:
    def key(value: Any) -> Any:
        text = str(value)
        try:
            return (0, float(text))
        except ValueError:
            return (1, text)

    if op == "%":
        return str(want).lower() in str(have or "").lower()
    if op in ("", "="):
        return str(have) == str(want) if not isinstance(want, list) else str(have) in [str(w) for w in want]
    if op in ("!", "!="):
        return str(have) != str(want)
    a, b = key(have), key(want)
    return bool({">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op])


def item_key(item_id: Any) -> int:
    try:
        return int(item_id)
    except (TypeError, ValueError):
        raise errors.argument("ID is not defined or invalid.") from None


def _sort_key(name: str) -> Callable[[dict[str, Any]], Any]:
    numeric = name in ("ID", "OPPORTUNITY") or name.endswith("_ID")

    def key(row: dict[str, Any]) -> Any:
        value = row.get(name)
        if numeric:
            try:
                return float(value or 0)
            except ValueError:
                return 0.0
        return str(value or "")

    return key


class CrmStore:
    def __init__(self) -> None:
        self.items: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in ENTITIES}
        self._next = dict.fromkeys(ENTITIES, 1)

    def add(self, entity: str, fields: dict[str, Any], user_id: int, now: float) -> int:
        new_id = self._next[entity]
        self._next[entity] += 1
        stamp = datetime.fromtimestamp(now, UTC).isoformat()
        record: dict[str, Any] = {"TITLE": "", "STAGE_ID" if entity == "deal" else "STATUS_ID": "NEW"}
        record |= {k.upper(): _stringify(v) for k, v in fields.items() if k.upper() != "ID"}
        record |= {
            "ID": str(new_id),
            "DATE_CREATE": stamp,
            "DATE_MODIFY": stamp,
            "CREATED_BY_ID": str(user_id),
            "MODIFY_BY_ID": str(user_id),
        }
        self.items[entity][new_id] = record
        return new_id

    def get(self, entity: str, item_id: Any) -> dict[str, Any]:
        try:
            return dict(self.items[entity][int(item_id)])
        except (KeyError, TypeError, ValueError):
            raise errors.not_found() from None

    def update(self, entity: str, item_id: Any, fields: dict[str, Any], user_id: int, now: float) -> None:
        record = self.items[entity].get(item_key(item_id))
        if record is None:
            raise errors.not_found()
        record |= {k.upper(): _stringify(v) for k, v in fields.items() if k.upper() != "ID"}
        record |= {"DATE_MODIFY": datetime.fromtimestamp(now, UTC).isoformat(), "MODIFY_BY_ID": str(user_id)}

    def delete(self, entity: str, item_id: Any) -> None:
        if self.items[entity].pop(item_key(item_id), None) is None:
            raise errors.not_found()

    def list(self, entity: str, params: dict[str, Any]) -> Page:
        rows = list(self.items[entity].values())
        flt = params.get("filter") or {}
        if not isinstance(flt, dict):
            raise errors.argument("filter must be an object")
        for raw, want in flt.items():
            match = _FILTER.match(str(raw).upper())
            if not match:
                raise errors.argument(f"bad filter key {raw!r}")
            op, name = match.group(1) or "", match.group(2)
            rows = [row for row in rows if _compare(op, row.get(name), want)]
        order = params.get("order") or {"ID": "ASC"}
        if isinstance(order, dict):
            for name, direction in reversed(list(order.items())):
                rows.sort(key=_sort_key(str(name).upper()), reverse=str(direction).upper() == "DESC")
        select = params.get("select")
        if isinstance(select, list) and select and "*" not in select:
            wanted = {str(s).upper() for s in select} | {"ID"}
            rows = [{k: v for k, v in row.items() if k in wanted} for row in rows]
        else:
            rows = [dict(row) for row in rows]
        try:
            start = int(params.get("start") or 0)
        except (TypeError, ValueError):
            raise errors.argument("start must be an integer") from None
        if start == -1:
            return Page(rows[:PAGE], None, None)
        page = rows[start : start + PAGE]
        more = start + PAGE < len(rows)
        return Page(page, len(rows), start + PAGE if more else None)
