"""One accepted event = one RQ job: the job hash, built the way RQ 3.0 builds it.

`Queue.enqueue` would cost a dozen Python objects and three round trips per event; the
ingress needs one script call. So the job hash is assembled here from a template that
holds every field RQ writes for a fresh queued job (`Job.to_dict` after
`Queue._prepare_for_queue`), plus the per-event fields: `data` (zlib of the pickled
`(func_name, instance, args, kwargs)` tuple, RQ's default serializer), `created_at`,
`enqueued_at` and `description`. The tests check the result against RQ's own
`Job.create(...).to_dict()` and read it back with `Job.fetch` and `Queue`.

`shared/lua/enqueue.lua` writes it (dedupe SET NX, HSET, RPUSH, SADD rq:queues) in one
atomic call; `enqueue_event` is the synchronous form of that call, for the worker side
(quarantine release, replays). The ingress batches the same call (`ingress.batcher`).
"""

from __future__ import annotations

import itertools
import os
import pickle
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from shared.events import Event
from shared.keys import Keys
from shared.lua import source
from shared.settings import Settings

FUNC_NAME = "workers.dispatch.run_event"
RQ_JOB_PREFIX = "rq:job:"
RQ_QUEUE_PREFIX = "rq:queue:"
RQ_QUEUES = "rq:queues"
ENQUEUE_LUA = source("enqueue")

_RQ_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # rq.utils._TIMESTAMP_FORMAT


def rq_time(moment: datetime) -> str:
    """A timestamp as RQ stores it (rq.utils.utcformat)."""
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
        return cls(queue, RQ_QUEUE_PREFIX + queue, settings.dedupe_window, tuple(flat))


def job_data(event_dict: dict[str, Any]) -> bytes:
    """The job's `data` field: what RQ's `Job.to_dict` stores for run_event(event_dict)."""
    payload = pickle.dumps((FUNC_NAME, None, (event_dict,), {}), protocol=pickle.HIGHEST_PROTOCOL)
    # a small window and memory level: zlib.compress's default state costs more to set up
    # than compressing a few hundred bytes; RQ's zlib.decompress reads either
    packer = zlib.compressobj(1, zlib.DEFLATED, 10, 1)
    return packer.compress(payload) + packer.flush()


def description(event: Event) -> str:
    """What `rq info` and rq-dashboard show: readable, no data, no secret."""
    return f"{FUNC_NAME}({event.name} member={event.member_id} id={event.id})"


def job_fields(event: Event, now: datetime | None = None) -> list[str | bytes]:
    """The per-event fields of the job hash, flattened (field, value, ...)."""
    stamp = rq_time(now or datetime.now(UTC))
    return [
        "created_at",
        stamp,
        "enqueued_at",
        stamp,
        "description",
        description(event),
        "data",
        job_data(event.model_dump(mode="json")),
        # Not RQ's: lets fetch.lua defer a rate-limited portal's jobs without leaving Redis
        # (workers/fairness.py). A member id is an identifier, not a secret.
        "b24_member",
        event.member_id,
    ]


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


def script_keys(keys: Keys, template: JobTemplate, event_id: str, job_id: str) -> list[str]:
    """KEYS of enqueue.lua, in its order."""
    return [keys.dedupe(event_id), RQ_JOB_PREFIX + job_id, template.queue_key, RQ_QUEUES]


def script_call(
    keys: Keys, template: JobTemplate, event: Event, now: datetime | None = None
) -> tuple[str, list[str], list[str | int | bytes]]:
    """(job id, KEYS, ARGV) of one enqueue.lua call for `event` on the template's queue."""
    job_id = new_job_id()
    argv: list[str | int | bytes] = [
        template.dedupe_window,
        job_id,
        *template.static,
        *job_fields(event, now),
    ]
    return job_id, script_keys(keys, template, event.id, job_id), argv


def queue_for(keys: Keys, event: Event) -> str:
    """Lifecycle events go to the lifecycle queue, every other event to the events queue."""
    return keys.lifecycle_queue if event.is_lifecycle else keys.events_queue


def enqueue_event(client: redis.Redis, keys: Keys, settings: Settings, event: Event, queue: str) -> bool:
    """Synchronously queue one event (worker side). False when it was a recent duplicate."""
    script = client.register_script(ENQUEUE_LUA)
    _, script_keys, argv = script_call(keys, JobTemplate.build(queue, settings), event)
    return bool(script(keys=script_keys, args=argv))
