"""Helpers for the worker tests: enqueue events as the ingress does (one RQ job per event)
and run real `b24pipe worker` processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from rq import Queue

from b24pipe.commands.run import stop_process
from shared import rqkeys
from shared.events import Event
from shared.keys import Keys

ROOT = Path(__file__).resolve().parents[2]


def event_dict(name: str, member_id: str = "member-a", **data: Any) -> dict[str, Any]:
    return Event(
        id=uuid.uuid4().hex,
        name=name,
        member_id=member_id,
        domain="a.bitrix24.test",
        data=data,
        ts=int(time.time()),
    ).model_dump(mode="json")


def enqueue(
    r: redis.Redis,
    keys: Keys,
    name: str,
    member_id: str = "member-a",
    *,
    lifecycle: bool = False,
    **data: Any,
) -> str:
    queue = Queue(keys.lifecycle_queue if lifecycle else keys.events_queue, connection=r)
    job_id = str(queue.enqueue("workers.dispatch.run_event", event_dict(name, member_id, **data)).id)
    r.hset(rqkeys.job(job_id), "b24_member", member_id)  # what the ingress's enqueue writes too
    return job_id


def enqueue_many(r: redis.Redis, keys: Keys, events: list[dict[str, Any]]) -> list[str]:
    queue = Queue(keys.events_queue, connection=r)
    jobs = queue.enqueue_many(
        [Queue.prepare_data("workers.dispatch.run_event", args=(event,)) for event in events]
    )
    with r.pipeline(transaction=False) as pipe:
        for job, event in zip(jobs, events, strict=True):
            pipe.hset(job.key, "b24_member", event["member_id"])
        pipe.execute()
    return [str(job.id) for job in jobs]


def worker_env(base_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = {**os.environ, **base_env}
    env.update(
        {
            "B24PIPE_HANDLERS": "tests.support.worker_handlers",
            "B24PIPE_RECOVERY_AFTER": "3",
            "B24PIPE_RETRY_BASE": "0.1",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "b24pipe", "worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


stop = stop_process  # the same SIGTERM-then-SIGKILL that `b24pipe run` stops its children with


def wait_for(condition: Callable[[], bool], timeout: float = 30, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def text(value: bytes | str | None) -> str:
    """A Redis reply as text (the test clients do not decode)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def seen(r: redis.Redis, ns: str, what: str) -> list[tuple[str, int, int]]:
    """(event id, attempt, pid) for each run a test handler recorded."""
    rows = []
    for raw in r.lrange(f"{ns}:test:{what}", 0, -1):
        event_id, attempt, pid = text(raw).split("|")
        rows.append((event_id, int(attempt), int(pid)))
    return rows
