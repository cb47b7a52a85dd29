"""`b24pipe replay` as a real command, on jobs a real worker failed or handled: every filter
selects what it says, `--dry-run` only counts, a replay requeues exactly the selection with a
progress bar, and `--handled` runs handled events again when B24PIPE_EVENT_LOG_TTL kept them."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from b24pipe.commands.replay import Candidate, Filters, failed_handlers, matches
from b24pipe.testing.workers import ROOT, enqueue, seen, start_worker, stop, wait_for, worker_env
from shared.keys import Keys


def _replay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "b24pipe", "replay", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _count(env: dict[str, str], *args: str) -> int:
    done = _replay(env, *args, "--dry-run")
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[0])


def test_filters_select_failed_jobs_and_replay_requeues_only_them(
    r: redis.Redis, keys: Keys, base_env: dict[str, str]
) -> None:
    env = worker_env(base_env, B24PIPE_MAX_ATTEMPTS="1")
    a_perm = [enqueue(r, keys, "ONTESTPERM", "member-a") for _ in range(2)]
    b_perm = enqueue(r, keys, "ONTESTPERM", "member-b")
    a_flaky = enqueue(r, keys, "ONTESTFLAKY", "member-a", fail=10)
    worker = start_worker(env, "--burst")
    assert worker.wait(60) == 0
    failed = FailedJobRegistry(queue=Queue(keys.events_queue, connection=r))
    assert set(failed.get_job_ids()) == {*a_perm, b_perm, a_flaky}

    assert _count(env) == 4
    assert _count(env, "--portal", "member-a") == 3
    assert _count(env, "--portal", "member-a", "--event", "ontestperm") == 2
    assert _count(env, "--handler", "permanent") == 3
    assert _count(env, "--handler", "tests.support.worker_handlers.flaky") == 1
    assert _count(env, "--error", "RuntimeError") == 1
    assert _count(env, "--since", "1h") == 4
    assert _count(env, "--until", "1h") == 0
    assert len(failed.get_job_ids()) == 4  # dry runs requeue nothing

    done = _replay(env, "--portal", "member-b")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1 failed job(s) match", "replayed 1 job(s)"]
    assert "1/1" in done.stderr
    assert Job.fetch(b_perm, connection=r).get_status() == JobStatus.QUEUED
    assert set(failed.get_job_ids()) == {*a_perm, a_flaky}


@pytest.mark.parametrize("bad", [["--since", "yesterday"], ["--until", "5 minutes"]])
def test_a_bad_time_is_one_line_and_exit_2(base_env: dict[str, str], bad: list[str]) -> None:
    done = _replay(worker_env(base_env), *bad)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_handled_events_kept_by_the_event_log_run_again(
    r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str]
) -> None:
    env = worker_env(base_env, B24PIPE_EVENT_LOG_TTL="3600")
    job_id = enqueue(r, keys, "ONTESTRECORD")
    worker = start_worker(env, "--burst")
    assert worker.wait(60) == 0
    assert Job.fetch(job_id, connection=r).get_status() == JobStatus.FINISHED
    assert r.ttl(f"rq:job:{job_id}") > 500  # kept beyond RQ's result TTL
    assert len(seen(r, ns, "record")) == 1

    done = _replay(env, "--handled", "--event", "ONTESTRECORD")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1 handled job(s) match", "replayed 1 job(s)"]
    worker = start_worker(env)
    try:
        assert wait_for(lambda: len(seen(r, ns, "record")) == 2)  # the handler ran again
    finally:
        assert stop(worker) == 0


def test_without_the_event_log_handled_jobs_keep_rq_s_result_ttl(
    r: redis.Redis, keys: Keys, base_env: dict[str, str]
) -> None:
    job_id = enqueue(r, keys, "ONTESTRECORD")
    worker = start_worker(worker_env(base_env), "--burst")
    assert worker.wait(60) == 0
    assert 0 < r.ttl(f"rq:job:{job_id}") <= 500


def test_handler_and_error_filters_read_the_failure_text() -> None:
    text = "mod.a.first: Permanent: ACCESS_DENIED by portal; mod.b.second: RuntimeError: boom"
    assert failed_handlers(text) == {"mod.a.first", "mod.b.second"}
    job = Candidate("j", "m", "ONCRMDEALUPDATE", text, 100.0)
    assert matches(job, Filters(handler="first", error="ACCESS_DENIED"))
    assert not matches(job, Filters(handler="third"))
    assert not matches(job, Filters(error="ACCESS"))  # whole codes only
    assert not matches(job, Filters(since=101.0))
