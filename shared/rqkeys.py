"""RQ's own Redis key names, taken from RQ's classes: the one place b24pipe spells them.

b24pipe writes RQ's records itself (the ingress enqueues, the worker's fetch/ack/maintain
scripts start and finish jobs, the CLI reads queues and registries) so that `rq info`, RQ's
workers and rq-dashboard see ordinary jobs. The names come from RQ (class attributes,
registry `key_template`s, the constants RQ's modules define), so they follow RQ, including
its `RQ_KEY_PREFIX`, instead of being a copy that could drift.

Python code calls the functions below. A Lua script receives every name as one ARGV entry,
`LUA_ARG` (a JSON object: prefixes to which the script appends a queue name, job id or
worker name, plus RQ's fixed keys), and reads it with `cjson.decode`; no `.lua` file spells
an RQ key. `tests/shared/test_rqkeys.py` checks both: the names equal RQ's own keys, and no
other module or script holds an RQ key literal.
"""

from __future__ import annotations

import json
from typing import cast

from redis import Redis
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution, ExecutionRegistry
from rq.job import Job
from rq.queue import Queue
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result
from rq.suspension import WORKERS_SUSPENDED
from rq.worker import Worker
from rq.worker_registration import WORKERS_BY_QUEUE_KEY


def _prefix(template: str) -> str:
    """The part of an RQ key template before its one `{0}` (RQ doubles braces of the prefix)."""
    head, placeholder, tail = template.partition("{0}")
    if not placeholder or tail:
        raise ValueError(f"not a prefix template: {template!r}")
    return head.format()


def _execution_prefix() -> str:
    """RQ builds an execution's key on the instance only: take one apart."""
    sample = Execution(id="e", job_id="j", connection=cast(Redis, None))
    return sample.key.removesuffix(sample.composite_key)


JOB = Job.redis_job_namespace_prefix
QUEUE = Queue.redis_queue_namespace_prefix
QUEUES = Queue.redis_queues_keys  # set of every queue key
WORKER = Worker.redis_worker_namespace_prefix
WORKERS = Worker.redis_workers_keys  # set of every worker key
WORKERS_OF = WORKERS_BY_QUEUE_KEY % ""  # + queue name: set of the keys of that queue's workers
SUSPENDED = WORKERS_SUSPENDED  # exists while `rq suspend` holds
STARTED = _prefix(StartedJobRegistry.key_template)
SCHEDULED = _prefix(ScheduledJobRegistry.key_template)
DEFERRED = _prefix(DeferredJobRegistry.key_template)
FINISHED = _prefix(FinishedJobRegistry.key_template)
FAILED = _prefix(FailedJobRegistry.key_template)
EXECUTIONS = _prefix(ExecutionRegistry.key_template)  # + job id: the job's execution index
EXECUTION = _execution_prefix()  # + '<job id>:<execution id>': one execution's hash
RESULTS: str = Result.get_key("")  # type: ignore[no-untyped-call]  # + job id: the results stream
WORKER_EXECUTIONS = WORKER_EXECUTIONS_KEY_TEMPLATE.format("").removeprefix(WORKER)  # after a worker key


def job(job_id: str) -> str:
    """Hash: the job (`Job.key`)."""
    return JOB + job_id


def queue(name: str) -> str:
    """List: the queue's waiting job ids (`Queue.key`)."""
    return QUEUE + name


def started(queue_name: str) -> str:
    """Sorted set: the queue's StartedJobRegistry (members `<job id>:<execution id>`)."""
    return STARTED + queue_name


def scheduled(queue_name: str) -> str:
    """Sorted set: the queue's ScheduledJobRegistry."""
    return SCHEDULED + queue_name


def executions(job_id: str) -> str:
    """Sorted set: the job's ExecutionRegistry."""
    return EXECUTIONS + job_id


def results(job_id: str) -> str:
    """Stream: the job's results (`Result.get_key`)."""
    return RESULTS + job_id


def worker(name: str) -> str:
    """Hash: the worker's record (`Worker.key`)."""
    return WORKER + name


def workers_of(queue_name: str) -> str:
    """Set: the keys of the workers serving the queue."""
    return WORKERS_OF + queue_name


# What every Lua script touching RQ's records gets as one ARGV entry (see the module docstring).
LUA_ARG = json.dumps(
    {
        "job": JOB,
        "queue": QUEUE,
        "worker": WORKER,
        "worker_executions": WORKER_EXECUTIONS,
        "workers": WORKERS,
        "workers_of": WORKERS_OF,
        "suspended": SUSPENDED,
        "started": STARTED,
        "scheduled": SCHEDULED,
        "deferred": DEFERRED,
        "finished": FINISHED,
        "failed": FAILED,
        "executions": EXECUTIONS,
        "execution": EXECUTION,
        "results": RESULTS,
    },
    separators=(",", ":"),
)
