"""RQ's key names: the ones `shared.rqkeys` derives are RQ's own, and nothing else spells them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import redis
from rq import Queue
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result
from rq.worker import Worker

from shared import rqkeys

ROOT = Path(__file__).resolve().parents[2]
# Where product code, its process kits and the benchmarks live (tests may spell RQ's keys).
CODE = ("b24pipe", "ingress", "workers", "shared", "bench", "examples")
RQ_KEY = re.compile(r"\brq:\w")


def _scripts() -> list[Path]:
    return sorted(p for top in CODE for p in (ROOT / top).rglob("*.lua"))


def test_names_are_the_keys_rq_itself_uses(r: redis.Redis, ns: str) -> None:
    name, job_id = f"{ns}:events", f"{ns}-job"
    assert rqkeys.queue(name) == Queue(name, connection=r).key
    assert rqkeys.job(job_id) == Job.key_for(job_id)
    assert rqkeys.started(name) == StartedJobRegistry(name, connection=r).key
    assert rqkeys.scheduled(name) == ScheduledJobRegistry(name, connection=r).key
    assert rqkeys.DEFERRED + name == DeferredJobRegistry(name, connection=r).key
    assert rqkeys.FINISHED + name == FinishedJobRegistry(name, connection=r).key
    assert rqkeys.FAILED + name == FailedJobRegistry(name, connection=r).key
    assert rqkeys.executions(job_id) == ExecutionRegistry(job_id, connection=r).key
    assert rqkeys.results(job_id) == Result.get_key(job_id)
    execution = Execution(id="exec1", job_id=job_id, connection=r)
    assert rqkeys.EXECUTION + f"{job_id}:exec1" == execution.key


def test_worker_names_are_where_rq_registers_a_worker(r: redis.Redis, ns: str) -> None:
    queue = f"{ns}:events"
    worker = Worker([Queue(queue, connection=r)], name=f"{ns}-w", connection=r)
    worker.register_birth()
    try:
        assert worker.key == rqkeys.worker(worker.name)
        assert worker.executions_key == rqkeys.worker(worker.name) + rqkeys.WORKER_EXECUTIONS
        assert r.exists(rqkeys.worker(worker.name))
        assert r.sismember(rqkeys.WORKERS, worker.key)
        assert r.sismember(rqkeys.workers_of(queue), worker.key)
    finally:
        worker.register_death()


def test_enqueue_by_rq_lands_under_the_names(r: redis.Redis, ns: str) -> None:
    name = f"{ns}:events"
    job = Queue(name, connection=r).enqueue("workers.dispatch.run_event", {})
    try:
        assert r.lrange(rqkeys.queue(name), 0, -1) == [job.id.encode()]
        assert r.exists(rqkeys.job(job.id))
        assert r.sismember(rqkeys.QUEUES, rqkeys.queue(name))
    finally:
        r.srem(rqkeys.QUEUES, rqkeys.queue(name))


def test_lua_argument_carries_every_name() -> None:
    names = json.loads(rqkeys.LUA_ARG)
    assert names["job"] == rqkeys.JOB and names["queue"] == rqkeys.QUEUE
    assert names["started"] == rqkeys.STARTED and names["suspended"] == rqkeys.SUSPENDED
    assert len(set(names.values())) == len(names)
    lua_names = {m for path in _scripts() for m in re.findall(r"\brq\.(\w+)", path.read_text())}
    assert lua_names and lua_names <= names.keys()  # no script reads a name it is not given


def test_no_script_or_module_but_rqkeys_spells_an_rq_key() -> None:
    scripts = _scripts()
    modules = sorted(p for top in CODE for p in (ROOT / top).rglob("*.py") if p != ROOT / "shared/rqkeys.py")
    assert scripts and modules
    spelled = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (*scripts, *modules)
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if RQ_KEY.search(line)
    ]
    assert spelled == []


def test_names_follow_rqs_key_prefix_setting() -> None:
    code = "from shared import rqkeys; print(rqkeys.queue('a'), rqkeys.EXECUTION, rqkeys.SUSPENDED)"
    env = {**os.environ, "RQ_KEY_PREFIX": "other"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["other:queue:a", "other:execution:", "other:suspended"]
