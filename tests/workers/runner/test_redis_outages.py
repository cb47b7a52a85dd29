"""Redis fails, restarts, stalls and fails over under real ingress and worker processes:
nothing answered 200 is lost, no process has to be restarted, and clock skew between
worker hosts makes nothing run twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import redis

from b24pipe.redisserver import free_port
from b24pipe.testing.ingress import event_id, ingress_process, seed_portal, stored_event_ids
from b24pipe.testing.outages import (
    TOKEN,
    Load,
    clock_shift_dir,
    ids_handled,
    restart,
    start_sentinel_set,
    steady_load,
    until,
)
from b24pipe.testing.workers import (
    ROOT,
    enqueue_many,
    event_dict,
    seen,
    start_worker,
    stop,
    text,
    wait_for,
    worker_env,
)
from shared.keys import Keys
from tests.conftest import PrivateRedis


def _stderr(process: subprocess.Popen[bytes]) -> str:
    """What a stopped process logged."""
    assert process.stderr is not None and process.poll() is not None
    return process.stderr.read().decode(errors="replace")


def _after_first_recovery(load: Load, back_at: float) -> list[int | None]:
    """Answers to requests sent after the first 200 that completed once Redis was back."""
    firsts = [item.started for item in load.sent if item.status == 200 and item.started >= back_at]
    assert firsts, "no event was accepted after Redis came back"
    return [item.status for item in load.sent if item.started > min(firsts)]


def test_redis_killed_and_restarted_from_its_aof_under_load_loses_nothing(
    private_redis: PrivateRedis, private_env: dict[str, str], keys: Keys, ns: str
) -> None:
    r = private_redis.client()
    seed_portal(r, keys, "m1", TOKEN)
    port = free_port()
    env = worker_env(private_env)
    worker = start_worker(env)
    load = Load()

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(steady_load(port, stop, load))
        await until(lambda: len(load.accepted()) >= 30, "events accepted before the crash")
        private_redis.kill()
        await asyncio.sleep(1.0)  # the outage
        private_redis.start()
        back_at = asyncio.get_running_loop().time()
        await until(
            lambda: sum(item.started >= back_at for item in load.sent if item.status == 200) >= 30, "recovery"
        )
        stop.set()
        await task
        return back_at

    try:
        with ingress_process(env, port) as ingress:
            back_at = asyncio.run(scenario())
            assert ingress.poll() is None  # never restarted
        assert load.unanswered() == []
        assert load.statuses() <= {200, 503}
        assert 503 in load.statuses()  # the outage was seen
        assert set(_after_first_recovery(load, back_at)) == {200}  # no 503 once Redis answers
        accepted = {event_id(form) for form in load.accepted()}
        assert wait_for(lambda: accepted <= set(ids_handled(r, ns)), timeout=60), "an accepted event was lost"
        assert worker.poll() is None  # waited the outage out
    finally:
        stop(worker)
    logged = _stderr(worker)
    assert logged.count("redis unreachable: waiting") >= 1
    assert "redis reachable again" in logged


def test_redis_stalled_10_s_workers_stay_alive_and_drain_without_recovering_each_other(
    private_redis: PrivateRedis, private_env: dict[str, str], keys: Keys, ns: str
) -> None:
    r = private_redis.client()
    env = worker_env(private_env)  # recovery after 3 s: a 10 s stall is far beyond it
    workers = [start_worker(env), start_worker(env)]
    try:
        assert wait_for(lambda: r.hlen(keys.workers) == 2)
        enqueue_many(r, keys, [event_dict("ONTESTCATCHALL") for _ in range(300)])
        private_redis.pause()
        try:
            wait_for(lambda: False, timeout=10)  # the stall itself: 10 s
        finally:
            private_redis.resume()
        queue = f"rq:queue:{keys.events_queue}"
        assert wait_for(lambda: r.llen(queue) == 0 and r.llen(f"{ns}:test:catch-all") >= 300, timeout=60)
        assert wait_for(lambda: all(r.llen(keys.inflight(text(name))) == 0 for name in r.hkeys(keys.workers)))
        assert len(set(ids_handled(r, ns))) == 300  # every event ran (at least once)
        assert r.hlen(keys.workers) == 2
        assert all(worker.poll() is None for worker in workers)  # nobody exited
    finally:
        for worker in workers:
            stop(worker)
    for worker in workers:
        logged = _stderr(worker)
        assert "recovered jobs of a dead worker" not in logged
        assert logged.count("redis unreachable: waiting") == logged.count("redis reachable again") >= 1


def test_two_workers_with_clocks_50_s_apart_run_each_event_once(
    r: redis.Redis, keys: Keys, ns: str, base_env: dict[str, str], tmp_path: Path
) -> None:
    env = worker_env(base_env)  # recovery after 3 s: 50 s of skew would be 17 "deaths"
    shifted_path = os.pathsep.join([str(clock_shift_dir(tmp_path / "clock")), env["PYTHONPATH"]])
    skewed_env = {**env, "PYTHONPATH": shifted_path, "B24PIPE_TEST_CLOCK_SHIFT": "50"}
    probe = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env=skewed_env,
        cwd=ROOT,
        capture_output=True,
    )
    assert float(probe.stdout) - time.time() > 45  # the shift is in force
    workers = [start_worker(env), start_worker(skewed_env)]
    try:
        assert wait_for(lambda: r.hlen(keys.workers) == 2)
        enqueue_many(r, keys, [event_dict("ONTESTSLOW", sleep=0.02) for _ in range(200)])
        assert wait_for(lambda: r.llen(f"{ns}:test:slow") >= 200, timeout=90)
        assert wait_for(lambda: r.llen(f"rq:queue:{keys.events_queue}") == 0)
    finally:
        for worker in workers:
            stop(worker)
    runs = Counter(event_id for event_id, _attempt, _pid in seen(r, ns, "slow"))
    assert len(runs) == 200
    assert [event for event, count in runs.items() if count > 1] == []
    assert len({pid for _event, _attempt, pid in seen(r, ns, "slow")}) == 2  # both took part
    for worker in workers:
        assert "recovered jobs of a dead worker" not in _stderr(worker)


def test_sigterm_under_load_fails_readiness_keeps_serving_then_answers_everything(
    private_redis: PrivateRedis, private_env: dict[str, str], keys: Keys
) -> None:
    """Like an orchestrator: the load balancer stops routing once `/readyz` fails; every
    request sent before that is answered, none is dropped on a closing connection."""
    r = private_redis.client()
    seed_portal(r, keys, "m1", TOKEN)
    port = free_port()
    load = Load()
    readiness: list[int] = []
    sigterm_at: list[float] = []

    async def balancer(stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as answer:
                        readiness.append(answer.status)
                except aiohttp.ClientError:
                    readiness.append(0)  # no answer at all: too late, requests were already refused
                if readiness[-1] != 200:
                    stop.set()
                await asyncio.sleep(0.05)

    async def scenario(process: subprocess.Popen[bytes]) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(steady_load(port, stop, load, clients=8, pause=0))
        probe = asyncio.create_task(balancer(stop))
        await until(lambda: len(load.accepted()) >= 100, "events accepted before SIGTERM")
        process.send_signal(signal.SIGTERM)
        sigterm_at.append(asyncio.get_running_loop().time())
        await asyncio.gather(task, probe)

    with ingress_process({**private_env, "B24PIPE_SHUTDOWN_DELAY": "2"}, port) as process:
        asyncio.run(scenario(process))
        assert process.wait(30) == 0
    assert readiness[-1] == 503 and set(readiness[:-1]) == {200}
    assert [(round(item.started - sigterm_at[0], 3), item.error) for item in load.unanswered()] == []
    assert load.statuses() == {200}
    stored = set(stored_event_ids(r, keys.events_queue))
    assert {event_id(form) for form in load.accepted()} <= stored


def test_sentinel_failover_under_load_with_replica_acks_loses_nothing(
    tmp_path: Path, base_env: dict[str, str], keys: Keys, ns: str
) -> None:
    cluster = start_sentinel_set(tmp_path / "sentinel")
    try:
        assert wait_for(cluster.healthy, timeout=60), "the sentinels did not see the replica"
        old_port = cluster.master_port()
        assert old_port == cluster.primary.port
        seed_portal(redis.Redis(port=old_port), keys, "m1", TOKEN)
        env = worker_env({**base_env, "REDIS_URL": cluster.url, "B24PIPE_ACK": "replica"})
        port = free_port()
        worker = start_worker(env)
        load = Load()

        async def scenario() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(steady_load(port, stop, load))
            await until(lambda: len(load.accepted()) >= 30, "events accepted before the failover")
            cluster.primary.process.kill()
            cluster.primary.process.wait()
            await until(lambda: cluster.master_port() == cluster.replica.port, "the failover", 60)
            cluster.primary = restart(cluster.primary)  # comes back as the new primary's replica
            await until(cluster.healthy, "the old primary rejoining as a replica", 60)
            back_at = asyncio.get_running_loop().time()
            await until(
                lambda: sum(i.started >= back_at for i in load.sent if i.status == 200) >= 30, "recovery"
            )
            stop.set()
            await task

        try:
            with ingress_process(env, port) as ingress:
                asyncio.run(scenario())
                assert ingress.poll() is None
            assert load.unanswered() == []
            assert load.statuses() <= {200, 503}
            new_primary = redis.Redis(port=cluster.replica.port)
            accepted = {event_id(form) for form in load.accepted()}
            handled = wait_for(lambda: accepted <= set(ids_handled(new_primary, ns)), timeout=30)
            missing = accepted - set(ids_handled(new_primary, ns))
            queued = stored_event_ids(new_primary, keys.events_queue)
            assert handled, (
                f"{len(missing)} accepted events not handled ({len(missing & set(queued))} queued)"
            )
            assert worker.poll() is None
            # RQ's own tools reach the new primary through the same sentinels
            rq_env = {k: v for k, v in env.items() if k != "RQ_REDIS_URL"}
            info = subprocess.run(
                [str(Path(sys.executable).with_name("rq")), "info", "-c", "b24pipe.rqconfig", "--only-queues"],
                env=rq_env, cwd=ROOT, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert info.returncode == 0 and keys.events_queue in info.stdout, info.stdout + info.stderr
        finally:
            stop(worker)
    finally:
        cluster.stop()


def test_a_command_run_during_a_restart_waits_for_redis_instead_of_failing(
    private_redis: PrivateRedis, private_env: dict[str, str], tmp_path: Path
) -> None:
    private_redis.kill()
    command = subprocess.Popen(
        [sys.executable, "-m", "b24pipe", "status", "--json"],
        env={**os.environ, **private_env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # redis-py alone gives up after about 2 s of retries
        assert not wait_for(lambda: command.poll() is not None, timeout=6)  # still waiting
        private_redis.start()
        out, err = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
    assert command.returncode == 0, err
    assert orjson.loads(out)["ack"] == "written"
