"""Coalescing and batch groups: a storm of events costs a handful of handler runs.

Handlers opt in (`@handler(event, coalesce=True)`, `batch=True`, `delay=seconds`):

- `coalesce=True`: update events of one (portal, event, entity) waiting in the queue are
  merged, so the handler runs once, after the burst, on the newest of them. Handlers re-read
  the entity through REST, so "newest" really means "once, after the last change".
- `batch=True`: the handler receives a portal's waiting events as one list (one group per
  portal and handler); with `coalesce=True` too, an entity's older updates are dropped from
  the list in favour of its newest.

Add and delete events (names ending ADD / DELETE), lifecycle events and events without a
recognisable entity (`Event.entity_key` None) are never merged away: a coalescing handler
runs on them at once, a batch handler gets each of them in its list.

The per-entity "latest version" index lives at dispatch, not at the ingress (whose hot path
stays one enqueue per event), and keeps one RQ job per event (`coalesce.lua`): the first job
to arrive leads the group and is held for the handler's delay (`B24PIPE_COALESCE_DELAY`; 0:
straight back to the tail of the queue, behind the burst already waiting); jobs arriving
meanwhile join the group and finish (`b24pipe_coalesced_total{event}`); the leader comes back
and, once the group has been quiet for the delay or has waited `B24PIPE_COALESCE_MAX_WAIT` in
all (a busy entity cannot hold it forever), claims the group and runs the handler. The claim
survives a worker killed mid-handler, a retry and a requeue from the failed registry, until
`release` after the handler succeeded; groups and claims expire on their own.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass

import redis
from prometheus_client import Counter

from shared import lua
from shared.events import Event
from shared.keys import Keys
from shared.settings import Settings

COALESCED = Counter(
    "b24pipe_coalesced",
    "Events whose handler run was merged into another job's (coalescing and batch handlers)",
    ["event"],
)

_NEVER_MERGED_SUFFIXES = ("ADD", "DELETE")
BATCH_SCOPE = "batch"


def merge_slot(event: Event) -> tuple[str, str, str] | None:
    """(portal, event, entity) an event may be merged within, or None: never merged."""
    if event.entity_key is None or event.is_lifecycle or event.name.upper().endswith(_NEVER_MERGED_SUFFIXES):
        return None
    return (event.member_id, event.name, event.entity_key)


def order_key(event: Event) -> tuple[int, float, str]:
    """Which of two events of one entity is newer: Bitrix24's ts, then arrival, then id."""
    return (event.ts, event.received_at, event.id)


def metric_label(name: str, known: Collection[str]) -> str:
    """Metric labels come only from known event names, never from what a request said."""
    return name if name in known else "other"


def _text(value: bytes | str) -> str:
    """Script answers as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value


class ArrivalVerdict(enum.Enum):
    RUN = "run"  # run the handler now, on `Arrival.events`
    HOLD = "hold"  # this job leads the group: run it again after `Arrival.after` seconds
    MERGED = "merged"  # another job's run covers this event: the handler is done for it


@dataclass(frozen=True)
class Arrival:
    verdict: ArrivalVerdict
    events: tuple[Event, ...] = ()
    after: float = 0.0


@dataclass(frozen=True)
class Grouping:
    """How one handler groups: per entity (`batch` False) or per portal, and its delay."""

    handler_id: str
    batch: bool
    coalesce: bool
    delay: float


class Coalescer:
    """The groups in Redis. One instance per process and client."""

    def __init__(self, client: redis.Redis, settings: Settings, known_events: Collection[str] = ()) -> None:
        self._script = lua.script(client, "workers/lua/coalesce.lua")
        self._client = client
        self._keys = Keys(settings.namespace)
        self._max_wait_ms = int(settings.coalesce_max_wait * 1000)
        self._ttl_ms = settings.coalesce_ttl * 1000
        self._claim_ttl_ms = (settings.failed_ttl + int(settings.retry_max) + 3600) * 1000
        self._known = frozenset(known_events)

    def _placement(self, event: Event, how: Grouping) -> tuple[str, str] | None:
        """(group scope, item field) of an event, or None: run it alone, at once."""
        slot = merge_slot(event) if how.coalesce else None
        if how.batch:
            if event.is_lifecycle:
                return None
            return BATCH_SCOPE, (f"u:{slot[1]}:{slot[2]}" if slot else f"e:{event.id}")
        if slot is None:
            return None
        return f"{slot[1]}:{slot[2]}", "u"

    def arrive(self, job_id: str | None, event: Event, how: Grouping) -> Arrival:
        """Lead, join or claim the handler's group for this job (see the module docstring)."""
        placement = self._placement(event, how) if job_id else None
        if placement is None or job_id is None:
            return Arrival(ArrivalVerdict.RUN, (event,))
        scope, field = placement
        answer = self._script(
            keys=[
                self._keys.coalesce_group(event.member_id, how.handler_id, scope),
                self._keys.coalesce_claim(event.member_id, how.handler_id, job_id),
            ],
            args=[
                job_id,
                field,
                event.ts,
                repr(float(event.received_at)),
                event.id,
                event.model_dump_json(),
                int(how.delay * 1000),
                self._max_wait_ms,
                self._ttl_ms,
                self._claim_ttl_ms,
            ],
        )
        verdict = _text(answer[0])
        if verdict == "hold":
            return Arrival(ArrivalVerdict.HOLD, after=int(answer[1]) / 1000)
        if verdict == "merged":
            COALESCED.labels(metric_label(event.name, self._known)).inc()
            return Arrival(ArrivalVerdict.MERGED)
        events = sorted(
            (Event.model_validate_json(raw) for raw in answer[1:]),
            key=lambda e: (e.received_at, e.ts, e.id),
        )
        return Arrival(
            ArrivalVerdict.RUN, tuple(e.model_copy(update={"attempt": event.attempt}) for e in events)
        )

    def release(self, member_id: str, handler_ids: Collection[str], job_id: str | None) -> None:
        """The handlers succeeded on their claims: forget them."""
        if job_id and handler_ids:
            self._client.delete(
                *(self._keys.coalesce_claim(member_id, handler, job_id) for handler in handler_ids)
            )
