"""Offline events: the lossless queue an app reads with event.offline.get.

The semantics of the `rest` module's code (bitrix24.md §8), traps included:

- a row is keyed by `MESSAGE_ID = md5(event name | event data)`: the queue keeps the latest
  state per event and object; a change to an object whose row is reserved makes a new,
  unreserved row, so nothing is lost while a batch is being processed;
- `get` with `clear=0` reserves up to `limit` unreserved rows (oldest `TIMESTAMP_X` first)
  under a fresh random `process_id`; with a `process_id` it reads that reservation again;
  without `clear=0` (`clear` defaults to 1) it deletes what it returns, a named reservation
  included;
- `error` marks rows as failed: they leave the normal lane, later changes of the same object
  merge into the error row, and only a read with `error=1` sees them again;
- reservations expire after about 34 days (their rows are dropped); unreserved rows stay.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

RESERVATION_TTL = 34 * 86400.0  # seconds a reserved row is kept before Bitrix24 drops it


def message_id(event: str, data: dict[str, Any]) -> str:
    """The row's identity: md5 of the event name and its data (one row per event and object)."""
    raw = event.encode() + b"|" + orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()


@dataclass
class OfflineRecord:
    id: int
    message_id: str
    event: str
    data: dict[str, Any]
    user_id: int | None
    timestamp: float
    process_id: str | None = None
    reserved_at: float = 0.0
    error: bool = False
    raw: str | None = None  # EVENT_DATA as sent instead of `data` (the `offline_unreadable` fault)

    def as_api(self) -> dict[str, Any]:
        return {
            "ID": str(self.id),
            "TIMESTAMP_X": datetime.fromtimestamp(self.timestamp, UTC).isoformat(),
            "EVENT_NAME": self.event,
            "EVENT_DATA": self.data if self.raw is None else self.raw,
            "EVENT_ADDITIONAL": {"user_id": str(self.user_id or 0)},
            "MESSAGE_ID": self.message_id,
            "ERROR": "1" if self.error else "0",
            "PROCESS_ID": self.process_id or "",
        }


class OfflineQueue:
    def __init__(self) -> None:
        self.records: list[OfflineRecord] = []
        self._next_id = 1

    def put(
        self, event: str, data: dict[str, Any], user_id: int | None, now: float, raw: str | None = None
    ) -> None:
        """Queue a change: merged into the object's unreserved row (error row included).
        `raw` replaces the data as the API shows it (a fault: data no consumer can read)."""
        key = message_id(event, data)
        for record in self.records:
            if record.message_id == key and record.process_id is None:
                record.data, record.user_id, record.timestamp = data, user_id, now
                return
        self.records.append(OfflineRecord(self._next_id, key, event, data, user_id, now, raw=raw))
        self._next_id += 1

    def _expire(self, now: float) -> None:
        self.records = [
            r for r in self.records if r.process_id is None or now - r.reserved_at < RESERVATION_TTL
        ]

    def get(
        self, limit: int, clear: bool, process_id: str | None, error: bool, now: float
    ) -> tuple[str, list[OfflineRecord]]:
        self._expire(now)
        if process_id:
            batch = [r for r in self.records if r.process_id == process_id]
        else:
            process_id = secrets.token_hex(16)
            waiting = [r for r in self.records if r.process_id is None and r.error == error]
            batch = sorted(waiting, key=lambda r: (r.timestamp, r.id))[:limit]
            if not clear:
                for record in batch:
                    record.process_id, record.reserved_at = process_id, now
        if clear:
            gone = {id(r) for r in batch}
            self.records = [r for r in self.records if id(r) not in gone]
        return process_id, batch

    def clear(self, process_id: str, ids: set[str] | None, message_ids: set[str] | None) -> int:
        def chosen(r: OfflineRecord) -> bool:
            if r.process_id != process_id:
                return False
            if ids is not None and str(r.id) not in ids:
                return False
            return message_ids is None or r.message_id in message_ids

        before = len(self.records)
        self.records = [r for r in self.records if not chosen(r)]
        return before - len(self.records)

    def mark_error(self, process_id: str, message_ids: set[str]) -> int:
        """Move rows out of the normal lane; a newer unreserved row of the object merges in."""
        count = 0
        for record in [r for r in self.records if r.process_id == process_id and r.message_id in message_ids]:
            newer = next(
                (r for r in self.records if r.process_id is None and r.message_id == record.message_id),
                None,
            )
            if newer is not None:
                record.data, record.user_id, record.timestamp = newer.data, newer.user_id, newer.timestamp
                self.records.remove(newer)
            record.error, record.process_id, record.reserved_at = True, None, 0.0
            count += 1
        return count

    def listing(self, now: float) -> list[OfflineRecord]:
        self._expire(now)
        return list(self.records)
