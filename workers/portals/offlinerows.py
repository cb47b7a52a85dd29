"""Pure decisions of the offline lane: a queue row as an `Event` and a stored batch (no I/O
here; `workers.portals.offline` does the calls; the bindings are `workers.portals.binding.desired_bindings`).

A row's event id is a digest of the portal, the row's `ID`, `MESSAGE_ID` and `TIMESTAMP_X`:
a reserved row never changes, so re-reading the same reservation after a crash gives the
same ids and the enqueue's de-duplication (`shared/lua/enqueue.lua`) skips what was queued;
a later change of the object is a new row (or a new `TIMESTAMP_X`), hence a new event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from shared.events import Event, entity_of

FEATURE = "rest_offline_extended"


def event_id(member_id: str, row: Mapping[str, Any]) -> str:
    """The stable id of one row (see the module docstring)."""
    parts = [member_id, "offline", str(row.get("ID", "")), str(row.get("MESSAGE_ID", ""))]
    parts.append(str(row.get("TIMESTAMP_X", "")))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _data(raw: object) -> dict[str, Any] | None:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str) and raw.strip().startswith("{"):
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return decoded if isinstance(decoded, dict) else None
    if raw in (None, "", []):  # PHP serialises an empty array as []
        return {}
    return None


def _ts(raw: object) -> int:
    try:
        return int(datetime.fromisoformat(str(raw)).timestamp())
    except ValueError:
        return 0


def _user(additional: object) -> int | None:
    if isinstance(additional, dict):
        value = str(additional.get("user_id", "")).strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def row_event(member_id: str, domain: str, row: Mapping[str, Any], now: float) -> Event | None:
    """The event a row stands for, or None when it cannot be one (no name, unreadable data):
    such rows are marked with `event.offline.error` instead of being queued."""
    name = row.get("EVENT_NAME")
    data = _data(row.get("EVENT_DATA"))
    if not isinstance(name, str) or not name.strip() or data is None or not row.get("ID"):
        return None
    name = name.strip().upper()
    entity_type, entity_id = entity_of(name, data)
    return Event(
        id=event_id(member_id, row),
        name=name,
        member_id=member_id,
        domain=domain,
        user_id=_user(row.get("EVENT_ADDITIONAL")),
        entity_id=entity_id,
        entity_type=entity_type,
        data=data,
        ts=_ts(row.get("TIMESTAMP_X")),
        received_at=now,
        source="offline",
    )


@dataclass
class Batch:
    """What the drain took from the portal's queue and has not cleared yet (one hash field)."""

    at: float  # when it was taken (Bitrix24 drops a reservation after about 34 days)
    rows: list[dict[str, Any]] = field(default_factory=list)
    queued: bool = False  # its jobs are durably queued: only the clear is left
    reserved: bool = True  # False: a destructive read (nothing to clear at Bitrix24)

    def dump(self) -> bytes:
        return orjson.dumps(
            {"at": self.at, "rows": self.rows, "queued": self.queued, "reserved": self.reserved}
        )

    @classmethod
    def load(cls, raw: bytes | str) -> Batch:
        value = orjson.loads(raw)
        return cls(float(value["at"]), list(value["rows"]), bool(value["queued"]), bool(value["reserved"]))


def merged_rows(
    stored: Sequence[Mapping[str, Any]], fetched: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The rows of a reservation read again: what Bitrix24 still holds, plus what we stored
    and it no longer has (an expired reservation is dropped there, not here), by row ID."""
    rows = {str(r.get("ID")): dict(r) for r in stored}
    rows.update({str(r.get("ID")): dict(r) for r in fetched})
    return list(rows.values())
