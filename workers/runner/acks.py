"""Acknowledgements: what the worker tells `ack.lua` to do with each job it took.

A job's fate is one `workers.runner.outcome.Action` from the handler's result to the Lua
script: the worker acknowledges a job with the ack of its outcome's action, each carrying
only the fields that action needs, and `front` for a job taken but never started (the
worker's own). `ack_call` turns a list of acks into the script's KEYS and ARGV: a header,
then one row per ack, the layout `workers/lua/ack.lua` documents and reads by name. A row is
its width, then its `COLUMNS` in order, each column meaning the same for every verb; it ends
after the last column its verb uses (the script reads a column past the end as ''), so the
common acks stay short: redis-py's packing of each argument is most of an ack's cost.

    verb    where the job goes                                            columns it uses
    done    FinishedJobRegistry (ttl 0: deleted, as RQ does)              ttl
    fail    FailedJobRegistry and RQ's FAILED result record               ttl, exc_info, exc_string
    retry   ScheduledJobRegistry at `at`                                  at, attempts
    defer   ScheduledJobRegistry, spread behind the portal's horizon      member_id, after, spacing
    hold    ScheduledJobRegistry at `at`, or the tail of its queue        at
    park    DeferredJobRegistry and the portal's parked list              member_id
    front   the front of its queue                                        -
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from shared import rqkeys
from shared.jobs import rq_time
from shared.keys import Keys
from workers.runner.outcome import Action


class Verb(StrEnum):
    """An ack's verb: its job's `Action`, or FRONT."""

    DONE = Action.DONE.value
    FAIL = Action.FAIL.value
    RETRY = Action.RETRY.value
    DEFER = Action.DEFER.value
    HOLD = Action.HOLD.value
    PARK = Action.PARK.value
    FRONT = "front"


class Spacing(StrEnum):
    """How a deferral spreads the portal's jobs (`workers.runner.fairness`)."""

    FIRST = "first"  # rate limited: the portal's horizon starts (or extends) with spacing `after`
    SKIP = "skip"  # the portal is already deferred: queue behind its horizon
    AGAIN = "again"  # its slot came but the limiter still said wait: now + after, horizon unchanged


# A row's columns, in this order (ack.lua reads the same names at the same offsets); the
# common verbs' columns first.
COLUMNS = (
    "verb",
    "job_id",
    "queue",
    "ttl",
    "at",
    "attempts",
    "member_id",
    "after",
    "spacing",
    "exc_info",
    "exc_string",
)

Value = str | int | float | bytes


@dataclass(frozen=True)
class DoneAck:
    verb: ClassVar[Verb] = Verb.DONE
    job_id: str
    queue: str
    ttl: int  # seconds the finished job stays visible; 0 deletes it, -1 keeps it


@dataclass(frozen=True)
class FailAck:
    verb: ClassVar[Verb] = Verb.FAIL
    job_id: str
    queue: str
    ttl: int  # seconds the failed job stays; -1 keeps it
    exc_info: bytes  # the scrubbed traceback, zlib-compressed as RQ stores it


@dataclass(frozen=True)
class RetryAck:
    verb: ClassVar[Verb] = Verb.RETRY
    job_id: str
    queue: str
    at: float  # unix time the job falls due
    attempts: int | None = None  # the job's new attempt count (None: unchanged)


@dataclass(frozen=True)
class DeferAck:
    verb: ClassVar[Verb] = Verb.DEFER
    job_id: str
    queue: str
    member_id: str
    after: float
    spacing: Spacing


@dataclass(frozen=True)
class HoldAck:
    verb: ClassVar[Verb] = Verb.HOLD
    job_id: str
    queue: str
    at: float | None  # unix time the coalescing leader runs again; None: at the tail of its queue


@dataclass(frozen=True)
class ParkAck:
    verb: ClassVar[Verb] = Verb.PARK
    job_id: str
    queue: str
    member_id: str


@dataclass(frozen=True)
class FrontAck:
    verb: ClassVar[Verb] = Verb.FRONT
    job_id: str
    queue: str


Ack = DoneAck | FailAck | RetryAck | DeferAck | HoldAck | ParkAck | FrontAck


def _row(
    ack: Ack,
    *,
    ttl: Value = "",
    at: Value = "",
    attempts: Value = "",
    member_id: Value = "",
    after: Value = "",
    spacing: Value = "",
    exc_info: Value = "",
    exc_string: Value = "",
) -> list[Value]:
    """One ARGV row: its width, then the columns (the parameters are `COLUMNS` by name, in
    order) up to the last one that is not ''."""
    cells = [
        ack.verb,
        ack.job_id,
        ack.queue,
        ttl,
        at,
        attempts,
        member_id,
        after,
        spacing,
        exc_info,
        exc_string,
    ]
    while cells[-1] == "":
        cells.pop()
    return [len(cells), *cells]


def row(ack: Ack) -> list[Value]:
    """The ack's ARGV row (see `_row`)."""
    if isinstance(ack, DoneAck):
        return _row(ack, ttl=ack.ttl)
    if isinstance(ack, FailAck):
        # the same bytes, base64 as RQ's result record wants them (exc_string: rq info, rq-dashboard)
        return _row(ack, ttl=ack.ttl, exc_info=ack.exc_info, exc_string=base64.b64encode(ack.exc_info))
    if isinstance(ack, RetryAck):
        return _row(ack, at=ack.at, attempts="" if ack.attempts is None else ack.attempts)
    if isinstance(ack, HoldAck):
        return _row(ack, at="" if ack.at is None else ack.at)
    if isinstance(ack, DeferAck):
        return _row(ack, member_id=ack.member_id, after=ack.after, spacing=ack.spacing)
    if isinstance(ack, ParkAck):
        return _row(ack, member_id=ack.member_id)
    return _row(ack)


def schedules(ack: Ack) -> bool:
    """Whether the ack puts its job in RQ's ScheduledJobRegistry (the heartbeat then looks again soon)."""
    return isinstance(ack, (RetryAck, DeferAck)) or (isinstance(ack, HoldAck) and ack.at is not None)


def ack_call(
    acks: Sequence[Ack], keys: Keys, *, worker: str, inflight: str, now: float
) -> tuple[list[str], list[Value]]:
    """KEYS and ARGV of one `ack.lua` call acknowledging `acks` for `worker` (its in-flight
    list `inflight`) at unix time `now`."""
    args: list[Value] = [worker, now, rq_time(now), rqkeys.LUA_ARG, keys.portal(""), keys.parked("")]
    for ack in acks:
        args.extend(row(ack))
    return [inflight, keys.defer_horizon, keys.parked_portals], args
