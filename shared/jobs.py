"""One accepted event = one RQ job: the job hash, built the way RQ 3.0 builds it.

`Queue.enqueue` would cost a dozen Python objects and three round trips per event; the
ingress needs a share of one script call. So the job hash is assembled here from a template
that holds every field RQ writes for a fresh queued job (`Job.to_dict` after
`Queue._prepare_for_queue`), the batch's timestamps (`created_at`, `enqueued_at`), and the
per-event fields `JOB_FIELDS`: `description`, `data` (the pickled `(func_name, instance,
args, kwargs)` tuple, RQ's default serializer) and our `b24_member`. The tests check the
result against RQ's own `Job.create(...).to_dict()` and read it back with `Job.fetch` and
`Queue`.

`shared/lua/enqueue.lua` writes a whole batch (dedupe SET NX, HSET, one RPUSH, SADD to RQ's
set of queues) in one atomic call; `enqueue_event` is the synchronous form of that call for one
event, for the worker side (quarantine release, replays). The ingress batches concurrent
requests into it (`ingress.enqueuer`).
"""

from __future__ import annotations

import itertools
import os
import pickle
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq import Queue

from shared import lua, rqkeys
from shared.events import LIFECYCLE_EVENTS, Event
from shared.keys import Keys
from shared.settings import Settings

# The function paths RQ stores in queued jobs. They outlive a release: a path here never
# changes, and a path an earlier release queued stays runnable through `LEGACY_PATHS`.
FUNC_NAME = "workers.dispatch.run_event"
REVERIFY_INSTALL = "workers.lifecycle.reverify_install"
CONFIRM_UNINSTALL = "workers.lifecycle.confirm_uninstall"
RECONCILE_BINDINGS = "workers.lifecycle.reconcile_bindings"
DRAIN_OFFLINE = "workers.lifecycle.drain_offline"
SEND_PROBE = "workers.lifecycle.send_probe"
LEGACY_PATHS = {
    "workers.binding.reconcile": RECONCILE_BINDINGS,
    "workers.offline.drain": DRAIN_OFFLINE,
    "workers.probe.send": SEND_PROBE,
}
# Seconds before a lifecycle job's first retry (a pending install's re-verification, an
# uninstall confirmation that could not tell yet); the delay doubles with each attempt.
LIFECYCLE_RETRY_BASE = 5.0
ENQUEUE = "shared/lua/enqueue.lua"

# The job hash fields that differ between events, in the order of `job_values`. `b24_member`
# is not RQ's: it lets fetch.lua defer a rate-limited portal's jobs without leaving Redis
# (workers/runner/fairness.py). A member id is an identifier, not a secret.
JOB_FIELDS = ("description", "data", "b24_member")
JobValues = tuple[str, bytes, str]

_RQ_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # rq.utils._TIMESTAMP_FORMAT


def rq_time(moment: datetime | float) -> str:
    """A moment (an aware datetime, or unix seconds) as RQ stores it (rq.utils.utcformat)."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.strftime(_RQ_TIME)


@dataclass(frozen=True, slots=True)
class JobTemplate:
    """The fields every job of one queue shares, pre-flattened as script arguments."""

    queue: str
    queue_key: str
    dedupe_window: int
    static: tuple[str | int, ...]

    @classmethod
    def build(cls, queue: str, settings: Settings) -> JobTemplate:
        fields: dict[str, str | int] = {
            "success_callback_name": "",
            "failure_callback_name": "",
            "stopped_callback_name": "",
            "started_at": "",
            "ended_at": "",
            "last_heartbeat": "",
            "worker_name": "",
            "group_id": "",
            "origin": queue,
            "timeout": settings.job_timeout,
            "failure_ttl": settings.failed_ttl,
            "status": "queued",
        }
        flat: list[str | int] = []
        for name, value in fields.items():
            flat += (name, value)
        return cls(queue, rqkeys.queue(queue), settings.dedupe_window, tuple(flat))

    def shared(self, now: datetime) -> tuple[str | int, ...]:
        """The field/value pairs of every job of a batch written at `now`."""
        stamp = rq_time(now)
        return (*self.static, "created_at", stamp, "enqueued_at", stamp)


def job_data(event: Mapping[str, Any]) -> bytes:
    """The job's `data` field: what RQ's `Job.to_dict` stores for run_event(event), `event`
    being the queued form (`Event.model_dump(mode="json")`).

    RQ compresses it with zlib and reads back either form (`Job.restore` falls back to the
    raw bytes when zlib refuses them, which it always does for a pickle: its first byte is
    no zlib header). A few hundred bytes gain little from zlib, and deflating them cost the
    ingress more than all the rest of the job."""
    payload: tuple[str, None, tuple[Mapping[str, Any]], dict[str, Any]] = (FUNC_NAME, None, (event,), {})
    return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


def description(event: Mapping[str, Any]) -> str:
    """What `rq info` and rq-dashboard show: readable, no data, no secret."""
    return f"{FUNC_NAME}({event['name']} member={event['member_id']} id={event['id']})"


def job_values(event: Mapping[str, Any]) -> JobValues:
    """The values of `JOB_FIELDS` for an event in its queued form."""
    return description(event), job_data(event), event["member_id"]


_id_prefix = ""
_id_counter = itertools.count()


def _new_id_prefix() -> None:
    global _id_prefix, _id_counter
    _id_prefix = uuid.uuid4().hex[:20]
    _id_counter = itertools.count()


_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)  # RQ's work horses are forks


def new_job_id() -> str:
    """Unique without a syscall per id: a random per-process prefix and a counter (uuid4
    reads the kernel's random source on every call)."""
    return f"{_id_prefix}{next(_id_counter):012x}"


@dataclass(slots=True)  # not frozen: a frozen dataclass costs the ingress 1 us per event to build
class QueuedJob:
    """One event's part of an enqueue.lua call."""

    job_id: str
    dedupe_key: str
    values: JobValues

    @classmethod
    def of(cls, keys: Keys, event: Mapping[str, Any]) -> QueuedJob:
        """The job of an event in its queued form (`Event.model_dump(mode="json")`)."""
        return cls(new_job_id(), keys.dedupe(event["id"]), job_values(event))


def script_call(
    template: JobTemplate, jobs: Sequence[QueuedJob], now: datetime | None = None
) -> tuple[list[str], list[str | int | bytes]]:
    """(KEYS, ARGV) of one enqueue.lua call writing `jobs` to the template's queue."""
    shared = template.shared(now or datetime.now(UTC))
    script_keys = [template.queue_key, rqkeys.QUEUES]
    argv: list[str | int | bytes] = [
        template.dedupe_window,
        len(shared),
        len(JOB_FIELDS),
        *shared,
        *JOB_FIELDS,
    ]
    for job in jobs:
        script_keys += (job.dedupe_key, rqkeys.job(job.job_id))
        argv.append(job.job_id)
        argv += job.values
    return script_keys, argv


def queue_for(keys: Keys, event: Event) -> str:
    """Lifecycle events go to the lifecycle queue, every other event to the events queue."""
    return queue_of(keys, event.name)


# The offline queue's doorbell goes with the lifecycle events: it only starts a drain, and a
# storm in the events queue must not delay the drain that empties the lossless lane.
DOORBELL = "ONOFFLINEEVENT"


def queue_of(keys: Keys, name: str) -> str:
    """The queue of events named `name` (see `queue_for`)."""
    return keys.lifecycle_queue if name in LIFECYCLE_EVENTS or name == DOORBELL else keys.events_queue


def enqueue_event(client: redis.Redis, keys: Keys, settings: Settings, event: Event, queue: str) -> bool:
    """Synchronously queue one event (worker side). False when it was a recent duplicate."""
    job = QueuedJob.of(keys, event.model_dump(mode="json"))
    script_keys, argv = script_call(JobTemplate.build(queue, settings), [job])
    queued: bytes = lua.script(client, ENQUEUE)(keys=script_keys, args=argv)
    return queued == b"1"


def schedule_reverify(
    connection: redis.Redis, keys: Keys, member_id: str, delay: float, attempt: int, token_digest: str
) -> None:
    """Queue attempt `attempt` at verifying the pending install of (member id, token digest)
    `delay` seconds from now: the ingress schedules the first, each attempt the next."""
    Queue(keys.lifecycle_queue, connection=connection).enqueue_in(
        timedelta(seconds=delay),
        REVERIFY_INSTALL,
        member_id,
        attempt,
        token_digest,
        description=f"reverify_install({member_id})",
    )
