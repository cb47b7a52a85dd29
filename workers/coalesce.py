"""Coalescing: when N update events of one entity wait in the queue, a handler runs once,
after the burst, on the latest of them.

Handlers re-read the entity through REST, so "latest" really means "once, after the last
change". The index lives at dispatch, not at the ingress (whose hot path stays one enqueue
per event), and needs no change to "one RQ job per event":

1. Pass one of a job (`arrive`): the first update event of an entity that reaches dispatch
   becomes the leader of a group keyed (portal, event, entity, handler). The dispatcher
   defers the leader's job by the handler's delay (0: straight back to the tail of the
   queue, behind the burst already waiting). Every later event of the group that reaches
   dispatch meanwhile is merged: counted, not run; it only becomes the group's "latest"
   payload when it is newer (ts, then received_at, then id: Bitrix24 may reorder).
2. Pass two (`claim_latest`), when the leader's job comes back: it takes the latest payload
   and ends the group, so a change after this point starts a new group and runs again.

A burst waiting in the queue therefore collapses whatever the backlog: the leader re-enters
the queue behind it. Crash-safety: a job that runs again (killed worker, retry) finds its
own state (`arrive` of the leader again says LEAD; `claim_latest` of a group already claimed
runs the event itself), so at-least-once holds. Groups expire after `B24PIPE_COALESCE_TTL`.

Never merged: add and delete events (names ending ADD / DELETE), lifecycle events, and
events without a recognisable entity (`Event.entity_key` None).
"""

from __future__ import annotations

import enum
from collections.abc import Collection

import redis
from prometheus_client import Counter

from shared.events import Event
from shared.keys import Keys
from shared.settings import Settings
from workers.luascripts import source

COALESCED = Counter(
    "b24pipe_coalesced", "Update events merged into a newer one of the same entity (handler runs)", ["event"]
)

_NEVER_MERGED_SUFFIXES = ("ADD", "DELETE")


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


class Arrival(enum.Enum):
    RUN = "run"  # never merged: run the handler now
    LEAD = "lead"  # leader: defer the job by the handler's delay, then `claim_latest`
    MERGED = "merged"  # a pending leader will run after it: skip the handler for this event


class Coalescer:
    """The per-handler coalescing groups in Redis. One instance per process and client."""

    def __init__(self, client: redis.Redis, settings: Settings, known_events: Collection[str] = ()) -> None:
        self._script = client.register_script(source("coalesce"))
        self._keys = Keys(settings.namespace)
        self._ttl_ms = settings.coalesce_ttl * 1000
        self._known = frozenset(known_events)

    def _key(self, group: str, slot: tuple[str, str, str]) -> str:
        member_id, name, entity = slot
        return self._keys.latest(member_id, name, entity, group)

    def _args(self, op: str, event: Event) -> list[str | int | float]:
        return [op, event.id, event.ts, repr(float(event.received_at))]

    def arrive(self, event: Event, group: str) -> Arrival:
        """First pass of a job, per coalescing handler (`group` = the handler's name)."""
        slot = merge_slot(event)
        if slot is None:
            return Arrival.RUN
        answer = self._script(
            keys=[self._key(group, slot)],
            args=[*self._args("arrive", event), event.model_dump_json(), self._ttl_ms],
        )
        if _text(answer) == "lead":
            return Arrival.LEAD
        COALESCED.labels(metric_label(event.name, self._known)).inc()
        return Arrival.MERGED

    def claim_latest(self, event: Event, group: str) -> Event | None:
        """Second pass of a leader's job: the event to run the handler on (the newest of the
        burst, keeping this job's attempt number), or None when a newer group will run it."""
        slot = merge_slot(event)
        if slot is None:
            return event
        answer = self._script(keys=[self._key(group, slot)], args=self._args("claim", event))
        verdict = _text(answer[0])
        if verdict == "latest":
            return Event.model_validate_json(answer[1]).model_copy(update={"attempt": event.attempt})
        if verdict == "own":
            return event
        COALESCED.labels(metric_label(event.name, self._known)).inc()
        return None
