"""Offline events: the lossless queue an app reads with event.offline.get.

Bitrix24 keeps only the latest record per event and object; `event.offline.get` with
`clear=0` reserves a batch under a `process_id` (parallel readers get disjoint batches),
`event.offline.clear` confirms, `event.offline.error` marks failures.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass
class OfflineRecord:
    id: int
    message_id: str
    event: str
    entity_id: str
    data: dict[str, Any]
    user_id: int | None
    timestamp: float
    process_id: str | None = None
    error: bool = False

    def as_api(self) -> dict[str, Any]:
        return {
            "ID": str(self.id),
            "TIMESTAMP_X": datetime.fromtimestamp(self.timestamp, UTC).isoformat(),
            "EVENT_NAME": self.event,
            "EVENT_DATA": self.data,
            "EVENT_ADDITIONAL": {"user_id": str(self.user_id or 0)},
            "MESSAGE_ID": self.message_id,
            "ERROR": "1" if self.error else "0",
            "PROCESS_ID": self.process_id or "",
        }


class OfflineQueue:
    def __init__(self) -> None:
        self.records: list[OfflineRecord] = []
        self._next_id = 1

    def put(self, event: str, entity_id: str, data: dict[str, Any], user_id: int | None, now: float) -> None:
        for record in self.records:
            if record.event == event and record.entity_id == entity_id and record.process_id is None:
                record.data, record.user_id, record.timestamp = data, user_id, now
                record.error = False
                return
        self.records.append(
            OfflineRecord(self._next_id, secrets.token_hex(16), event, entity_id, data, user_id, now)
        )
        self._next_id += 1

    def get(
        self, limit: int, clear: bool, process_id: str | None, error: bool
    ) -> tuple[str, list[OfflineRecord]]:
        process_id = process_id or secrets.token_hex(16)
        batch = [r for r in self.records if r.process_id is None and r.error == error][:limit]
        for record in batch:
            record.process_id = process_id
        if clear:
            self.records = [r for r in self.records if r not in batch]
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
        count = 0
        for record in self.records:
            if record.process_id == process_id and record.message_id in message_ids:
                record.error, record.process_id = True, None
                count += 1
        return count

    def listing(self) -> list[OfflineRecord]:
        return list(self.records)
