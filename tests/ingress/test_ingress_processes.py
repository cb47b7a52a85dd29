"""`b24pipe ingress` as operators run it: SIGTERM drains, several processes share a port,
one `/metrics` and one revocation for all of them."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from b24pipe.redisserver import free_port
from b24pipe.testing.ingress import (
    body,
    event_id,
    ingress_process,
    metrics_text,
    post_event,
    queued,
    seed_portal,
    stored_event_ids,
    wait_logged,
)
from ingress.tokencheck import POLL_INTERVAL
from shared.keys import Keys
from tests.conftest import PrivateRedis

TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
OK_BODY = b'{"status":"ok","message":"event accepted"}'
ROOT = Path(__file__).resolve().parents[2]


def _fresh_connections() -> aiohttp.TCPConnector:
    """One connection per request: the kernel spreads new connections over the processes."""
    return aiohttp.TCPConnector(force_close=True, limit=0)


def _accepts_connections(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _serving_children(pid: int) -> set[int]:
    """The ingress processes the supervisor spawned (not multiprocessing's resource tracker)."""
    children = {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    return {child for child in children if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()}


def _sample(metrics: str, outcome: str) -> float:
    found = re.search(
        rf'b24pipe_ingress_requests_total\{{event="ONCRMDEALUPDATE",outcome="{outcome}"\}} ([0-9.]+)', metrics
    )
    return float(found.group(1)) if found else 0.0


async def _until(predicate: Callable[[], Awaitable[bool]], what: str, limit: float = 30) -> None:
    """Wait (bounded, generously) for a condition the test does not time."""
    try:
        async with asyncio.timeout(limit):
            while not await predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"gave up waiting for {what}") from None


def test_sigterm_answers_every_request_in_flight_then_exits_0(
    private_redis: PrivateRedis, private_env: dict[str, str], keys: Keys
) -> None:
    """Requests held in flight (Redis stalled) when SIGTERM arrives: the process stops
    accepting connections, still answers each of them once Redis answers, writes their jobs
    and exits 0."""
    client = private_redis.client()
    seed_portal(client, keys, "m1", TOKEN)
    port = free_port()
    env = {**private_env, "B24PIPE_ENQUEUE_TIMEOUT": "10"}
    forms = [body("m1", TOKEN, entity=10 + n) for n in range(20)]

    async def scenario(process: subprocess.Popen[bytes]) -> list[tuple[int, bytes]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            assert (await post_event(session, port, body("m1", TOKEN, entity=1)))[0] == 200
            private_redis.pause()
            try:
                held = [asyncio.create_task(post_event(session, port, form)) for form in forms]

                async def all_held() -> bool:
                    return "b24pipe_ingress_inflight 20.0" in await metrics_text(session, port)

                await _until(all_held, "20 requests in flight")
                process.send_signal(signal.SIGTERM)

                async def closed() -> bool:
                    return not await asyncio.to_thread(_accepts_connections, port)

                await _until(closed, "the listener closed")
                # Redis answers well after that: for a second the drain must be waiting for it,
                # the process alive and every request still held
                for _ in range(10):
                    assert process.poll() is None, "the ingress exited without draining"
                    assert not any(task.done() for task in held), "a request was answered without Redis"
                    await asyncio.sleep(0.1)
            finally:
                private_redis.resume()
            return list(await asyncio.gather(*held))

    with ingress_process(env, port) as process:
        answers = asyncio.run(scenario(process))
        assert process.wait(30) == 0
    assert answers == [(200, OK_BODY)] * 20
    assert {event_id(form) for form in forms} <= set(stored_event_ids(client, keys.events_queue))


def test_several_processes_serve_one_port_with_one_metrics(
    private_redis: PrivateRedis, private_env: dict[str, str], keys: Keys, tmp_path: Path
) -> None:
    seed_portal(private_redis.client(), keys, "m1", TOKEN)
    port = free_port()
    shared_metrics = tmp_path / "metrics"
    shared_metrics.mkdir()
    env = {**private_env, "PROMETHEUS_MULTIPROC_DIR": str(shared_metrics)}
    sent = 40

    async def scenario() -> list[float]:
        async with aiohttp.ClientSession(connector=_fresh_connections()) as session:
            answers = await asyncio.gather(
                *(post_event(session, port, body("m1", TOKEN, entity=n)) for n in range(sent))
            )
            assert [status for status, _ in answers] == [200] * sent

            async def all_counted() -> bool:
                return _sample(await metrics_text(session, port), "accepted") == sent

            await _until(all_counted, "every process's counts in /metrics")
            # whichever process answers, /metrics is the sum over all of them
            return [_sample(await metrics_text(session, port), "accepted") for _ in range(10)]

    with ingress_process(env, port, "--processes", "2") as process:
        wait_logged(process, "ingress listening", count=2)
        totals = asyncio.run(scenario())
        children = _serving_children(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    assert totals == [sent] * 10
    assert len(children) == 2
    counted_by = {int(path.stem.split("_")[-1]) for path in shared_metrics.glob("counter_*.db")}
    assert children <= counted_by  # each process counted requests it served
    assert len(queued(private_redis.client(), keys.events_queue)) == sent


def test_a_revocation_reaches_every_process(
    private_redis: PrivateRedis, private_env: dict[str, str], keys: Keys
) -> None:
    """Each process drops its token cache when the portals version moves; it polls it every
    POLL_INTERVAL, which the design bounds at a second for all of them together."""
    assert 4 * POLL_INTERVAL <= 1.0
    seed_portal(private_redis.client(), keys, "m1", TOKEN)
    port = free_port()

    async def scenario() -> list[int]:
        async with aiohttp.ClientSession(connector=_fresh_connections()) as session:
            warm = await asyncio.gather(
                *(post_event(session, port, body("m1", TOKEN, entity=n)) for n in range(40))
            )
            assert [status for status, _ in warm] == [200] * 40  # both processes have m1 cached
            revoked = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "b24pipe", "portals", "revoke", "m1"],
                env={"PATH": "/usr/bin:/bin", **private_env},
                capture_output=True,
                timeout=60,
                cwd=ROOT,
            )
            assert revoked.returncode == 0, revoked.stderr

            async def refused() -> bool:
                return (await post_event(session, port, body("m1", TOKEN, entity=1000)))[0] == 401

            await _until(refused, "a 401 after the revocation")
            await asyncio.sleep(4 * POLL_INTERVAL)  # every other process has polled since
            after = await asyncio.gather(
                *(post_event(session, port, body("m1", TOKEN, entity=2000 + n)) for n in range(40))
            )

            async def all_counted() -> bool:
                metrics = await metrics_text(session, port)
                found = re.search(r'b24pipe_ingress_rejections_total\{reason="revoked"\} ([0-9.]+)', metrics)
                return found is not None and float(found.group(1)) >= 41

            await _until(all_counted, "every process's rejections in /metrics")
            return [status for status, _ in after]

    with ingress_process(private_env, port, "--processes", "2") as process:
        wait_logged(process, "ingress listening", count=2)
        statuses = asyncio.run(scenario())
    assert statuses == [401] * 40


def test_a_bad_process_count_is_one_line_and_exit_status_2(base_env: dict[str, str]) -> None:
    for count in ("0", "-1", "two", "1000"):
        done = subprocess.run(
            [sys.executable, "-m", "b24pipe", "ingress", "--port", str(free_port()), "--processes", count],
            env=base_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (count, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and "--processes" in done.stderr, (count, done.stderr)
