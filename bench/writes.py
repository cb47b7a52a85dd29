"""`make bench-writes`: creates whose answers get lost, three clients, one run.

BENCH_WRITES (default 1000) `crm.deal.add` per side on one simulated portal where 10 % of
the committed adds lose their answer (the simulator's `rest_commit_drop_rate`: the deal is
made, then the connection is dropped):

- v3: handlers in real `b24pipe worker` processes calling `b24.v3("crm.deal.add", ...)`:
  every write carries a derived Idempotency-Key, a lost answer is resent under it;
- v2: the same through `b24.call`: a lost answer is not resent, the handler gets
  `WriteUncertain` (counted in b24pipe_rest_uncertain_writes_total);
- naive: a plain v2 client that retries any failed request, as most clients do.

Printed: deals created and duplicated per side, lost answers, ambiguous failures surfaced
and counted. Exits 1 when the run did no real work or b24pipe's sides are wrong (a v3 create
missing or duplicated, a v2 duplicate, an uncertain write not surfaced or not counted).
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import aiohttp
import redis
from rq import Queue

from b24pipe.commands.run import stop_process
from b24pipe.redisserver import free_port, start_server
from b24pipe.sim.client import SimClient
from b24pipe.sim.fixture import start_simulator, stop
from bench.knobs import knob
from bench.limiter import seed
from bench.write_handlers import record_key
from shared.crypto import TokenCipher, generate_key
from shared.events import Event
from shared.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
LOST_SHARE = 0.1
PROCESSES = 2
NAIVE_CONCURRENCY = 8
NAIVE_TRIES = 5
NAMESPACE = "benchwrites"


@dataclass
class Side:
    wanted: int
    created: int  # distinct events whose deal exists
    duplicates: int  # deals beyond the first per event
    lost: int  # answers the simulator dropped after committing
    uncertain: int = 0  # WriteUncertain surfaced to handlers
    counted: float = 0.0  # b24pipe_rest_uncertain_writes_total
    seconds: float = 0.0


def _titles(simulator: SimClient, endpoint: str, token: str) -> Counter[str]:
    titles: Counter[str] = Counter()
    last = 0
    while True:
        query = {"order": {"ID": "ASC"}, "filter": {">ID": last}, "start": -1}
        page = simulator.rest(endpoint, "crm.deal.list", query, token=token).body["result"]
        titles.update(str(item["TITLE"]) for item in page)
        if len(page) < 50:
            return titles
        last = int(page[-1]["ID"])


def _side(titles: Counter[str], prefix: str, wanted: int, lost: int) -> Side:
    mine = {title: count for title, count in titles.items() if title.startswith(prefix)}
    return Side(wanted, len(mine), sum(count - 1 for count in mine.values()), lost)


def _scrape(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = cast(bytes, answer.read()).decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def _up(port: int) -> bool:
    try:
        _scrape(port, "b24pipe_rest_uncertain_writes_total")
    except OSError:
        return False
    return True


def _through_workers(
    simulator: SimClient, r: redis.Redis, member: str, event: str, n: int, ports: list[int]
) -> tuple[float, float]:
    """Enqueue n events as the ingress does and wait for the handlers; (seconds, uncertain
    writes counted by the workers' metrics)."""
    keys = Keys(NAMESPACE)
    queue = Queue(keys.events_queue, connection=r)
    now = int(time.time())
    events = [
        Event(id=uuid.uuid4().hex, name=event, member_id=member, domain="bench.test", ts=now).model_dump(
            mode="json"
        )
        for _ in range(n)
    ]
    before = r.llen(record_key(NAMESPACE, "done"))
    started = time.monotonic()
    for start in range(0, n, 500):
        chunk = events[start : start + 500]
        jobs = queue.enqueue_many(
            [Queue.prepare_data("workers.dispatch.run_event", args=(e,)) for e in chunk]
        )
        with r.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.hset(job.key, "b24_member", member)
            pipe.execute()
    deadline = time.monotonic() + 60 + n * 0.2
    while r.llen(record_key(NAMESPACE, "done")) - before < n and time.monotonic() < deadline:
        time.sleep(0.1)
    seconds = time.monotonic() - started
    try:
        counted = sum(_scrape(port, "b24pipe_rest_uncertain_writes_total") for port in ports)
    except OSError:
        counted = -1.0  # a worker is gone: the verdict says so
    return seconds, counted


async def _naive(endpoint: str, token: str, n: int) -> None:
    """A plain client: POST, and on any failure POST again (up to NAIVE_TRIES)."""
    todo: asyncio.Queue[int] = asyncio.Queue()
    for number in range(n):
        todo.put_nowait(number)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            while not todo.empty():
                number = todo.get_nowait()
                body = {"fields": {"TITLE": f"naive:{number}"}, "auth": token}
                for _ in range(NAIVE_TRIES):
                    try:
                        async with session.post(f"{endpoint}crm.deal.add.json", json=body) as answer:
                            if answer.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.05)

        await asyncio.gather(*(worker() for _ in range(NAIVE_CONCURRENCY)))


def run(n: int, tmp: Path) -> tuple[Side, Side, Side]:
    """(v3, v2, naive) after n creates each."""
    server = start_server(tmp / "redis")
    process, simulator = start_simulator(tmp / "simulator.log")
    workers: list[subprocess.Popen[bytes]] = []
    try:
        r = redis.Redis.from_url(server.url)
        key = generate_key()
        portal = simulator.create_portal(drain=500, burst=2000)
        pair = simulator.install(portal.member_id)
        seed(
            r,
            NAMESPACE,
            TokenCipher([base64.b64decode(key)]),
            {**pair.__dict__, "member_id": portal.member_id, "domain": portal.domain},
            "custom:500/2000",
        )
        simulator.faults(portal.member_id, rest_commit_drop_rate=LOST_SHARE, fault_methods=["crm.deal.add"])
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "B24PIPE_NAMESPACE": NAMESPACE,
            "B24PIPE_TOKEN_KEYS": key,
            "B24PIPE_HANDLERS": "bench.write_handlers",
            "B24_OAUTH_URL": simulator.base_url,
            "B24PIPE_HTTP_TIMEOUT": "5",
            "B24PIPE_RETRY_BASE": "0.1",
            "B24PIPE_ALLOW_HTTP": "1",
            "B24PIPE_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONPATH": str(ROOT),
        }
        ports = [free_port() for _ in range(PROCESSES)]
        for index, port in enumerate(ports):
            with (tmp / f"worker{index}.log").open("ab") as log:
                workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "b24pipe", "worker", "--metrics-port", str(port)],
                        cwd=ROOT,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                )

        deadline = time.monotonic() + 60
        while not all(_up(port) for port in ports) and time.monotonic() < deadline:
            time.sleep(0.1)  # the workers' start is not part of what is measured

        def lost() -> int:
            return int(simulator.stats(portal.member_id)["answers_lost"])

        before = lost()
        v3_seconds, _ = _through_workers(simulator, r, portal.member_id, "ONBENCHCREATEV3", n, ports)
        v3_lost, before = lost() - before, lost()
        v2_seconds, counted = _through_workers(simulator, r, portal.member_id, "ONBENCHCREATEV2", n, ports)
        v2_lost, before = lost() - before, lost()
        started = time.monotonic()
        asyncio.run(_naive(pair.client_endpoint, pair.access_token, n))
        naive_seconds, naive_lost = time.monotonic() - started, lost() - before

        titles = _titles(simulator, pair.client_endpoint, pair.access_token)
        v3 = _side(titles, "v3:", n, v3_lost)
        v3.seconds = v3_seconds
        v2 = _side(titles, "v2:", n, v2_lost)
        v2.uncertain, v2.counted, v2.seconds = r.llen(record_key(NAMESPACE, "uncertain")), counted, v2_seconds
        naive = _side(titles, "naive:", n, naive_lost)
        naive.seconds = naive_seconds
        return v3, v2, naive
    finally:
        for worker in workers:
            stop_process(worker)
        stop(process)
        server.stop()


def verdict(v3: Side, v2: Side, naive: Side) -> list[str]:
    """What is wrong with b24pipe's sides (empty: nothing)."""
    problems = []
    if v3.created != v3.wanted or v3.duplicates:
        problems.append(f"v3: {v3.created}/{v3.wanted} created, {v3.duplicates} duplicates")
    if v2.duplicates:
        problems.append(f"v2: {v2.duplicates} duplicates")
    if not v2.uncertain == v2.counted == v2.lost:
        problems.append(f"v2: {v2.lost} lost answers, {v2.uncertain} surfaced, {v2.counted:.0f} counted")
    if v2.created < v2.wanted or naive.created < naive.wanted or not v3.lost + v2.lost:
        problems.append("no real work: creates missing or no answer lost")
    return problems


def main() -> int:
    n = knob("BENCH_WRITES", 1000, 1)
    with tempfile.TemporaryDirectory() as tmp:
        v3, v2, naive = run(n, Path(tmp))
    print(f"writes bench: {n} crm.deal.add per side, {LOST_SHARE:.0%} of committed adds lose their answer")
    print(
        f"  b24pipe v3 (Idempotency-Key): {v3.created}/{n} created, duplicates: {v3.duplicates},"
        f" answers lost: {v3.lost} (resent under their key), {v3.seconds:.1f} s"
    )
    print(
        f"  b24pipe v2: {v2.created}/{n} created, duplicates from automatic retries: {v2.duplicates},"
        f" answers lost: {v2.lost}, ambiguous failures surfaced to the handler: {v2.uncertain},"
        f" counted in b24pipe_rest_uncertain_writes_total: {v2.counted:.0f}, {v2.seconds:.1f} s"
    )
    print(
        f"  naive v2 client (resends any failure): {naive.created}/{n} created,"
        f" duplicates: {naive.duplicates}, answers lost: {naive.lost}, {naive.seconds:.1f} s"
    )
    problems = verdict(v3, v2, naive)
    print(f"writes: {'OK' if not problems else 'FAIL: ' + '; '.join(problems)}")
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
