"""Helpers for the Redis outage tests and `bench/failover.py`: a steady load of events on a
real ingress, a Sentinel-managed pair (primary, replica, three sentinels) started on free
ports, and a clock shift for one process."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis

from b24pipe.redisserver import LocalServer, start_sentinel, start_server
from b24pipe.testing.ingress import body, post_event
from b24pipe.testing.workers import text

TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
MASTER = "b24main"

# Loaded by Python at start-up from PYTHONPATH: shifts this process's wall clock (time.time)
# by B24PIPE_TEST_CLOCK_SHIFT seconds, as a host whose clock is off would.
SITECUSTOMIZE = """\
import os
import time

_shift = float(os.environ.get("B24PIPE_TEST_CLOCK_SHIFT", "0"))
if _shift:
    _real_time = time.time
    time.time = lambda: _real_time() + _shift
"""


def clock_shift_dir(directory: Path) -> Path:
    """A directory to put first on PYTHONPATH for a process whose clock is shifted."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return directory


@dataclass
class Sent:
    """One event posted: its body, when it was sent (loop time), and the answer (None: the
    connection was lost after the request was sent)."""

    form: str
    started: float
    status: int | None = None
    error: str = ""


@dataclass
class Load:
    sent: list[Sent] = field(default_factory=list)

    def accepted(self) -> list[str]:
        return [item.form for item in self.sent if item.status == 200]

    def unanswered(self) -> list[Sent]:
        return [item for item in self.sent if item.status is None]

    def statuses(self) -> set[int | None]:
        return {item.status for item in self.sent}


async def steady_load(
    port: int,
    stop: asyncio.Event,
    load: Load,
    *,
    clients: int = 4,
    first_entity: int = 1,
    pause: float = 0.01,
) -> None:
    """`clients` keep-alive clients post fresh events (ONTESTCATCHALL, portal m1) until
    `stop` is set; a refused connection was never sent and is not counted."""
    counter = itertools.count(first_entity)
    loop = asyncio.get_running_loop()

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            form = body("m1", TOKEN, event="ONTESTCATCHALL", entity=next(counter))
            sent = Sent(form, loop.time())
            try:
                sent.status = (await post_event(session, port, form, timeout=15))[0]
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(pause)
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                sent.error = f"{type(exc).__name__}: {exc}"[:120]
            load.sent.append(sent)
            await asyncio.sleep(pause)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))


async def until(condition: Callable[[], bool], what: str, limit: float = 60) -> None:
    """Poll `condition()` (bounded) while the load runs."""
    deadline = asyncio.get_running_loop().time() + limit
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class SentinelSet:
    """A primary, one replica and three sentinels watching them, all on free ports."""

    directory: Path
    primary: LocalServer
    replica: LocalServer
    sentinels: list[LocalServer]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER}/0"

    def master_port(self) -> int | None:
        """The primary's port as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            try:
                address = redis.Redis(port=sentinel.port).execute_command(  # type: ignore[no-untyped-call]
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER
                )
            except redis.RedisError:
                continue
            if address:
                return int(address[1])
        return None

    def healthy(self) -> bool:
        """Every sentinel sees the other two and a replica in sync."""
        try:
            for sentinel in self.sentinels:
                master: Any = redis.Redis(port=sentinel.port).sentinel_master(MASTER)
                if int(master["num-other-sentinels"]) != 2 or int(master["num-slaves"]) < 1:
                    return False
            port = self.master_port()
            return port is not None and redis.Redis(port=port).info("replication")["connected_slaves"] >= 1
        except (redis.RedisError, KeyError):
            return False

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.stop()


def start_sentinel_set(directory: Path) -> SentinelSet:
    primary = start_server(directory / "a")
    replica = start_server(directory / "b", extra=["--replicaof", "127.0.0.1", str(primary.port)])
    sentinels = [start_sentinel(directory / f"sentinel-{n}", MASTER, primary.port) for n in range(3)]
    return SentinelSet(directory, primary, replica, sentinels)


def restart(server: LocalServer) -> LocalServer:
    """The same server again on its port and data directory (its AOF read back; a sentinel
    turns a returning old primary into a replica)."""
    return start_server(server.directory, server.port)


def ids_handled(r: redis.Redis, ns: str) -> list[str]:
    """Event ids the catch-all test handler recorded, one per run."""
    return [text(raw).split("|")[0] for raw in r.lrange(f"{ns}:test:catch-all", 0, -1)]
