"""The event as handlers see it, and the pure decisions about it both sides share.

The ingress turns a delivery into an `Event` (stripped of every token) and queues
`Event.model_dump(mode="json")` as the single argument of one RQ job; the worker
validates it back. The `id` is a fingerprint of what Bitrix24 sent, so a duplicate
delivery has the same id (the ingress de-duplicates on it, handlers may use it as an
idempotency key).
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

LIFECYCLE_EVENTS = frozenset({"ONAPPINSTALL", "ONAPPUPDATE", "ONAPPUNINSTALL", "ONAPPPAYMENT", "ONAPPTEST"})

# Bitrix24 event name prefixes and the entity type their data[FIELDS][ID] names.
_ENTITY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("ONCRMDEALRECURRING", "deal_recurring"),
    ("ONCRMDEAL", "deal"),
    ("ONCRMLEAD", "lead"),
    ("ONCRMCONTACT", "contact"),
    ("ONCRMCOMPANY", "company"),
    ("ONCRMQUOTE", "quote"),
    ("ONCRMINVOICE", "invoice"),
    ("ONCRMACTIVITY", "activity"),
    ("ONCRMPRODUCT", "product"),
    ("ONCRMTIMELINECOMMENT", "timeline_comment"),
    ("ONCRMDYNAMICITEM", "dynamic"),
    ("ONTASKCOMMENT", "task_comment"),
    ("ONTASK", "task"),
    ("ONUSER", "user"),
    ("ONCALENDARENTRY", "calendar_entry"),
)


class Event(BaseModel):
    """A validated Bitrix24 event, bound to one portal. Handlers receive this."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(description="stable idempotency key of this delivery")
    name: str
    member_id: str
    domain: str = ""
    user_id: int | None = None
    entity_id: str | None = None
    entity_type: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    ts: int = 0
    attempt: int = 1
    handler_id: str | None = None
    received_at: float = 0.0
    source: str = Field(default="online", description="`online` (POSTed) or `offline` (drained)")

    @property
    def entity_key(self) -> str | None:
        """`<type>:<id>` when the event names one entity; None otherwise (never merged)."""
        if self.entity_type and self.entity_id:
            return f"{self.entity_type}:{self.entity_id}"
        return None

    @property
    def is_lifecycle(self) -> bool:
        return self.name in LIFECYCLE_EVENTS


def _scalar_id(value: object) -> str | None:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        text = str(value).strip()
        if text and len(text) <= 64 and text.lstrip("-").isdigit():
            return text
    return None


@functools.lru_cache(maxsize=1024)
def _entity_type_of(name: str) -> str | None:
    """The entity type an event name's prefix says (cached: a handful of names recur)."""
    upper = name.upper()
    return next((kind for prefix, kind in _ENTITY_PREFIXES if upper.startswith(prefix)), None)


def entity_of(name: str, data: dict[str, Any]) -> tuple[str | None, str | None]:
    """(entity_type, entity_id) of an event, or (None, None) when it names no single entity.

    Tasks carry their id in FIELDS_AFTER; smart-process items add ENTITY_TYPE_ID, which is
    part of the type so that item 5 of one process is not item 5 of another."""
    entity_type = _entity_type_of(name)
    if entity_type is None:
        return None, None
    fields = data.get("FIELDS_AFTER") if entity_type == "task" else None
    if not isinstance(fields, dict):
        fields = data.get("FIELDS")
    if not isinstance(fields, dict):
        return None, None
    entity_id = _scalar_id(fields.get("ID"))
    if entity_id is None:
        return None, None
    if entity_type == "dynamic":
        type_id = _scalar_id(fields.get("ENTITY_TYPE_ID"))
        if type_id is None:
            return None, None
        entity_type = f"dynamic_{type_id}"
    return entity_type, entity_id


def fingerprint(
    member_id: str, name: str, handler_id: str | None, ts: int, data: dict[str, Any], user_id: int | None
) -> str:
    """Identity of a delivery: same portal, event, handler id, ts, data and user give the
    same id. The user is part of it because `ts` has one-second resolution and an update
    event's data is often only the entity id: the app's own write (its echo) and a person's
    change of the same entity in the same second would otherwise be one event, and the
    person's change would be lost to de-duplication."""
    canonical = orjson.dumps(
        [member_id, name, handler_id or "", ts, data, user_id],
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()[:32]
