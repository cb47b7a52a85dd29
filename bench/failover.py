"""`make bench-failover`: what a Redis restart, a Sentinel failover and a long stall cost.

Each scenario runs a real `b24pipe ingress` and a real `b24pipe worker` (the test handlers
record every event they run) under a steady load of distinct events, on servers this bench
starts itself:

- restart: the Redis process is killed (SIGKILL) and started again from its AOF after
  BENCH_OUTAGE seconds (1);
- failover: primary, one replica and three sentinels, `REDIS_URL=redis+sentinel://...`,
  `B24PIPE_ACK=replica`; the primary is killed, and restarted once Sentinel promoted the
  replica (it rejoins as the new primary's replica, so replica acks are possible again);
- stall: the Redis process is stopped (SIGSTOP) for BENCH_STALL seconds (60), then resumed.

Printed per scenario: events acknowledged (200), lost (acknowledged but never handled:
must be 0), 503s, requests left without an answer, how long no event was accepted (from
the fault to the first 200 sent after Redis was back), the recovery time (from Redis back to
that 200), and whether the worker stayed up. Exit status 1 when anything was lost or unanswered, a status
other than 200/503 was seen, the worker exited, or a scenario acknowledged nothing.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from b24pipe.redisserver import LocalServer, free_port, start_server
from b24pipe.testing.ingress import event_id, ingress_process, seed_portal
from b24pipe.testing.outages import TOKEN, Load, ids_handled, restart, start_sentinel_set, steady_load, until
from b24pipe.testing.workers import start_worker, stop, wait_for, worker_env
from bench.knobs import knob
from shared.crypto import generate_key
from shared.keys import Keys


@dataclass
class Figures:
    scenario: str
    acknowledged: int
    lost: int
    unavailable: int
    unanswered: int
    other: int
    worker_alive: bool  # the worker process waited the fault out instead of exiting
    window: float  # from the fault to the first 200 sent after Redis was back
    recovery: float  # from Redis back (restarted, promoted, resumed) to that 200

    def line(self) -> str:
        return (
            f"  {self.scenario:9s} acknowledged {self.acknowledged:6d}   lost {self.lost}   503s {self.unavailable:5d}"
            f"   unanswered {self.unanswered}   no 200 for {self.window:5.1f} s"
            f"   recovery after Redis was back {self.recovery:4.1f} s"
            f"   worker {'up' if self.worker_alive else 'EXITED'}"
        )

    @property
    def ok(self) -> bool:
        return (
            self.acknowledged > 0
            and self.lost == 0
            and self.unanswered == 0
            and self.other == 0
            and self.worker_alive
        )


def _env(url: str, **extra: str) -> dict[str, str]:
    base = {
        "REDIS_URL": url,
        "B24PIPE_NAMESPACE": f"bench{uuid.uuid4().hex[:8]}",
        "B24PIPE_TOKEN_KEYS": generate_key(),
        "B24PIPE_ALLOW_HTTP": "1",
        "B24_CLIENT_ID": "app.bench.client",
        "B24_CLIENT_SECRET": "bench-client-secret",
        **extra,
    }
    return worker_env(base, B24PIPE_RECOVERY_AFTER="10")


def _scenario(
    name: str,
    env: dict[str, str],
    seeded: redis.Redis,
    fault: Callable[[], None],
    reader: Callable[[], redis.Redis],
) -> Figures:
    """Load, fault (blocking: it returns once the fault is over), load again; then wait for
    the worker to handle everything acknowledged."""
    ns = env["B24PIPE_NAMESPACE"]
    seed_portal(seeded, Keys(ns), "m1", TOKEN)
    port = free_port()
    load = Load()
    worker = start_worker(env)
    fault_at, back_at = [0.0], [0.0]

    async def run() -> None:
        stop_load = asyncio.Event()
        task = asyncio.create_task(steady_load(port, stop_load, load))
        await until(lambda: len(load.accepted()) >= 50, f"{name}: events accepted before the fault")
        fault_at[0] = asyncio.get_running_loop().time()
        await asyncio.to_thread(fault)
        back_at[0] = asyncio.get_running_loop().time()
        await until(
            lambda: sum(i.started > back_at[0] for i in load.sent if i.status == 200) >= 50, "recovery", 120
        )
        stop_load.set()
        await task

    try:
        with ingress_process(env, port):
            asyncio.run(run())
        accepted = {event_id(form) for form in load.accepted()}
        wait_for(lambda: accepted <= set(ids_handled(reader(), ns)), timeout=120)
        lost = len(accepted - set(ids_handled(reader(), ns)))
        alive = worker.poll() is None
    finally:
        stop(worker)
    first = min(
        (i.started for i in load.sent if i.status == 200 and i.started > back_at[0]), default=float("nan")
    )
    statuses = [i.status for i in load.sent]
    return Figures(
        scenario=name,
        acknowledged=len(accepted),
        lost=lost,
        unavailable=statuses.count(503),
        unanswered=statuses.count(None),
        other=sum(status not in (200, 503, None) for status in statuses),
        worker_alive=alive,
        window=first - fault_at[0],
        recovery=first - back_at[0],
    )


def restart_scenario(workdir: Path, outage: float) -> Figures:
    server = start_server(workdir / "restart")
    holder = [server]

    def fault() -> None:
        holder[0].process.kill()
        holder[0].process.wait()
        time.sleep(outage)
        holder[0] = restart(holder[0])

    try:
        client = redis.Redis(port=server.port)
        return _scenario("restart", _env(server.url), client, fault, lambda: client)
    finally:
        holder[0].stop()


def failover_scenario(workdir: Path) -> Figures:
    cluster = start_sentinel_set(workdir / "failover")
    try:
        if not wait_for(cluster.healthy, timeout=60):
            raise SystemExit("failover: the sentinels did not see the replica")

        def fault() -> None:
            cluster.primary.process.kill()
            cluster.primary.process.wait()
            if not wait_for(lambda: cluster.master_port() == cluster.replica.port, timeout=60):
                raise SystemExit("failover: Sentinel did not promote the replica")
            cluster.primary = restart(cluster.primary)
            if not wait_for(cluster.healthy, timeout=60):  # replica acks possible again
                raise SystemExit("failover: the old primary did not rejoin as a replica")

        env = _env(cluster.url, B24PIPE_ACK="replica")
        primary = redis.Redis(port=cluster.primary.port)
        return _scenario("failover", env, primary, fault, lambda: redis.Redis(port=cluster.replica.port))
    finally:
        cluster.stop()


def stall_scenario(workdir: Path, seconds: float) -> Figures:
    server: LocalServer = start_server(workdir / "stall")

    def fault() -> None:
        server.process.send_signal(signal.SIGSTOP)
        time.sleep(seconds)
        server.process.send_signal(signal.SIGCONT)

    try:
        client = redis.Redis(port=server.port)
        return _scenario(f"stall {seconds:g}s", _env(server.url), client, fault, lambda: client)
    finally:
        server.stop()


def main() -> int:
    outage = knob("BENCH_OUTAGE", 1.0)
    stall = knob("BENCH_STALL", 60.0)
    workdir = Path(tempfile.mkdtemp(prefix="b24pipe-failover-"))
    print(
        f"failover benchmark: steady load (4 clients), restart after {outage:g}s, failover, stall {stall:g}s"
    )
    results = [restart_scenario(workdir, outage), failover_scenario(workdir), stall_scenario(workdir, stall)]
    for figures in results:
        print(figures.line())
    verdict = all(figures.ok for figures in results)
    print(f"  verdict: {'OK' if verdict else 'FAILED'} (nothing lost, every request answered)")
    return 0 if verdict else 1


if __name__ == "__main__":
    raise SystemExit(main())
