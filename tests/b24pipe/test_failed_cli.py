"""`b24pipe failed list | requeue | purge` as a real command, on failed jobs a real worker made."""

from __future__ import annotations

import subprocess
import sys

import orjson
import redis
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from b24pipe.testing.workers import ROOT, enqueue, seen, start_worker, stop, worker_env
from shared.keys import Keys


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "b24pipe", "failed", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_list_requeue_and_purge(r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str]) -> None:
    env = worker_env(base_env)
    queue = Queue(keys.events_queue, connection=r)
    failed = FailedJobRegistry(queue=queue)
    perm = [enqueue(r, keys, "ONTESTPERM") for _ in range(3)]
    worker = start_worker(env, "--burst")
    assert worker.wait(60) == 0
    assert set(failed.get_job_ids()) == set(perm)

    listed = _cli(env, "list", "--json")
    assert listed.returncode == 0
    rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert {row["id"] for row in rows} == set(perm)
    assert all(row["event"] == "ONTESTPERM" and row["member_id"] == "member-a" for row in rows)
    assert all("abcdefabcdefabcdefabcdefabcdef0123456789" not in row["error"] for row in rows)

    assert _cli(env, "requeue").returncode == 2
    assert _cli(env, "requeue", "no-such-job").returncode == 1
    assert _cli(env, "requeue", perm[0]).returncode == 0
    assert queue.get_job_ids() == [perm[0]]
    assert _cli(env, "requeue", "--all").returncode == 0
    assert set(queue.get_job_ids()) == set(perm) and len(failed) == 0

    worker = start_worker(env, "--burst")
    assert worker.wait(60) == 0
    assert len(seen(r, ns, "perm")) == 6  # each ran again once, then failed again
    assert set(failed.get_job_ids()) == set(perm)

    purged = _cli(env, "purge")
    assert purged.returncode == 0 and "purged 3" in purged.stdout
    assert len(failed) == 0 and not any(r.exists(f"rq:job:{job_id}") for job_id in perm)
    assert len(FinishedJobRegistry(queue=queue)) == 0
    stop(worker)
