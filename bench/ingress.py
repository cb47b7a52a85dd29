"""`make bench-ingress`: the ingress against a bare aiohttp app, same load, same run.

Starts its own Redis (unless `REDIS_URL` is set), seeds portals with application tokens,
and starts the servers: the real ingress (`b24pipe ingress`, one process), a bare aiohttp
app that reads the body and answers the same JSON, on the same event loop as the ingress
(`ingress.server.event_loop`, printed), and the ingress with `--processes 2`. A load
generator in its own process keeps 64 keep-alive connections busy with realistic
form-encoded events, every one distinct, from many portals with valid tokens. Rounds
alternate between the servers; the figures are medians over rounds. It prints accepted
events/s, p50/p99 for both, their ratios, Redis commands and ingress CPU microseconds per
event, events/s with 1 and 2 processes, and checks that the jobs in Redis equal the 200s
the ingress gave.

Then the same load on one ingress per acknowledgement mode (`B24PIPE_ACK`), side by side,
alternating within each round: `written`; `fsync` with the server switched to `appendfsync
always` for its rounds; and `replica` with a replica of the bench's own server attached
(each skipped, with a note, when `REDIS_URL` names a server the bench cannot reconfigure).

Last, fair overload: an ingress with `B24PIPE_MAX_INFLIGHT=BENCH_FLOOD_CAP` gets, from one
portal, 5x the events/s the single ingress took above, pipelined over
`BENCH_FLOOD_CONNECTIONS` connections, while 50 other portals send `BENCH_QUIET_RATE`
events/s each; it prints the share of each side's events answered 200 (the quiet portals'
must be at least 99 %).

Knobs (environment): BENCH_ROUNDS (5), BENCH_SECONDS (3), BENCH_CONNECTIONS (64),
BENCH_PORTALS (500), BENCH_FLOOD_CAP (256), BENCH_FLOOD_CONNECTIONS (512),
BENCH_QUIET_RATE (10).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
import redis

from b24pipe.redisserver import LocalServer, free_port, start_server
from bench.knobs import knob
from bench.verdict import side_problems, verdict
from ingress.server import event_loop
from shared import rqkeys
from shared.ackmode import ACK_MODES
from shared.crypto import digest, generate_key
from shared.keys import Keys
from shared.portals import AcceptedToken, Portal

if TYPE_CHECKING:
    from aiohttp import web

NAMESPACE = "bench"
OK = b'{"status":"ok","message":"event accepted"}'
_EVENTS = ("ONCRMDEALUPDATE", "ONCRMCONTACTUPDATE", "ONCRMLEADADD", "ONTASKUPDATE", "ONCRMCOMPANYUPDATE")


def token_of(seed: str, member_id: str) -> str:
    return hashlib.sha256(f"{seed}:{member_id}".encode()).hexdigest()[:32]


def member_of(index: int) -> str:
    return hashlib.md5(f"portal-{index}".encode(), usedforsecurity=False).hexdigest()


# --- the bare app ------------------------------------------------------------------------
def serve_events(port: int, events: Callable[[web.Request], Awaitable[web.Response]]) -> None:
    """An aiohttp app answering POST /b24/events with `events`, on the ingress's event loop
    (aiohttp is imported here: the load generator runs without it)."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/b24/events", events)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=event_loop()[1]())


def bare(port: int) -> None:
    from aiohttp import web

    async def events(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=OK, content_type="application/json")

    serve_events(port, events)


# --- the load generator ------------------------------------------------------------------
def _body(serial: int, portals: int, seed: str) -> bytes:
    """A Bitrix24-shaped event, as its PHP sender encodes it (brackets percent-encoded)."""
    member = member_of(serial % portals)
    name = _EVENTS[serial % len(_EVENTS)]
    fields = [
        ("event", name),
        ("event_handler_id", str(100 + serial % 7)),
        ("data[FIELDS][ID]", str(serial)),
        ("ts", str(1_736_000_000 + serial)),
        ("auth[domain]", f"p{serial % portals}.bitrix24.ru"),
        ("auth[client_endpoint]", f"https://p{serial % portals}.bitrix24.ru/rest/"),
        ("auth[server_endpoint]", "https://oauth.bitrix.info/rest/"),
        ("auth[member_id]", member),
        ("auth[application_token]", token_of(seed, member)),
        ("auth[user_id]", str(1 + serial % 50)),
    ]
    return "&".join(f"{quote(k)}={quote(v)}" for k, v in fields).encode()


def _framed(body: bytes) -> bytes:
    return (
        b"POST /b24/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    )


class _Conn(asyncio.Protocol):
    def __init__(self, gen: _Load) -> None:
        self.gen = gen
        self.buffer = b""
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send()

    def send(self) -> None:
        if self.gen.stop_at <= time.perf_counter() or self.transport is None:
            self.gen.finished()
            return
        self.sent_at = time.perf_counter()
        self.transport.write(self.gen.request())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answer = _answer(self.buffer)
        if answer is None:
            return
        status, self.buffer = answer
        self.gen.record(status, time.perf_counter() - self.sent_at)
        self.send()


def _answer(buffer: bytes) -> tuple[int, bytes] | None:
    """The status of the first complete answer in `buffer` and what follows it; None while
    the answer is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end]
    length_at = head.lower().find(b"content-length:")
    length = int(head[length_at + 15 :].split(b"\r\n", 1)[0]) if length_at >= 0 else 0
    if len(buffer) < end + 4 + length:
        return None
    return int(head[9:12]), buffer[end + 4 + length :]


class _Load:
    def __init__(self, port: int, portals: int, seed: str, offset: int) -> None:
        self.port = port
        self.portals = portals
        self.seed = seed
        self.serial = offset
        self.stop_at = 0.0
        self.statuses: dict[int, int] = {}
        self.latencies: list[float] = []
        self.open = 0
        self.done = asyncio.get_running_loop().create_future()

    def request(self) -> bytes:
        self.serial += 1
        return _framed(_body(self.serial, self.portals, self.seed))

    def record(self, status: int, latency: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies.append(latency)

    def finished(self) -> None:
        self.open -= 1
        if self.open == 0 and not self.done.done():
            self.done.set_result(None)


async def _load(
    port: int, seconds: float, connections: int, portals: int, seed: str, offset: int
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    gen = _Load(port, portals, seed, offset)
    gen.stop_at = time.perf_counter() + seconds
    gen.open = connections
    started = time.perf_counter()
    transports = []
    for _ in range(connections):
        transport, _ = await loop.create_connection(lambda: _Conn(gen), "127.0.0.1", port)
        transports.append(transport)
    await gen.done
    elapsed = time.perf_counter() - started
    for transport in transports:
        transport.close()
    lat = sorted(gen.latencies)
    pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000) if lat else (lambda q: 0.0)
    return {
        "ok": gen.statuses.get(200, 0),
        "statuses": gen.statuses,
        "rps": gen.statuses.get(200, 0) / elapsed,
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
    }


def load_main(argv: list[str]) -> None:
    port, seconds, connections, portals, offset = (
        int(argv[0]),
        float(argv[1]),
        int(argv[2]),
        int(argv[3]),
        int(argv[4]),
    )
    result = asyncio.run(_load(port, seconds, connections, portals, os.environ["BENCH_SEED"], offset))
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS).decode())


def flood_main(argv: list[str]) -> None:
    port, seconds, flood_rate, quiet, quiet_rate, portals, offset, flood_connections = argv
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    result = asyncio.run(
        _flood(
            int(port),
            float(seconds),
            float(flood_rate),
            int(quiet),
            float(quiet_rate),
            int(portals),
            os.environ["BENCH_SEED"],
            int(offset),
            int(flood_connections),
        )
    )
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS).decode())


# --- the flood round ---------------------------------------------------------------------
FLOOD_MEMBER = 0  # portal index of the flooder; the quiet portals are the next ones
FLOOD_WINDOW = 64  # answers one flood connection may owe before it counts as backed up
TICK = 0.005


class _Pipelined(asyncio.Protocol):
    """A keep-alive connection that sends without waiting for answers (HTTP/1.1
    pipelining, as a queue server with a backlog does) and counts the answers' statuses."""

    def __init__(self, statuses: dict[int, int]) -> None:
        self.statuses = statuses
        self.buffer = b""
        self.owed = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.transport.write(request)
        self.owed += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (answer := _answer(self.buffer)) is not None:
            status, self.buffer = answer
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.owed -= 1


async def _answered(connections: list[_Pipelined], patience: float) -> None:
    """Until every open connection has had its answers, or `patience` seconds."""
    for _ in range(int(patience / 0.05)):
        if not any(c.owed for c in connections if c.transport is not None):
            return
        await asyncio.sleep(0.05)


async def _flood(
    port: int,
    seconds: float,
    flood_rate: float,
    quiet: int,
    quiet_rate: float,
    portals: int,
    seed: str,
    offset: int,
    flood_connections: int,
) -> dict[str, Any]:
    """One portal sends `flood_rate` events/s over `flood_connections` connections while
    `quiet` others send `quiet_rate` each over their own; every event distinct."""
    loop = asyncio.get_running_loop()
    flood_statuses: dict[int, int] = {}
    quiet_statuses: dict[int, int] = {}

    async def connect(statuses: dict[int, int]) -> _Pipelined:
        _, protocol = await loop.create_connection(lambda: _Pipelined(statuses), "127.0.0.1", port)
        return protocol

    floods = [await connect(flood_statuses) for _ in range(flood_connections)]
    calm = [await connect(quiet_statuses) for _ in range(max(1, quiet // 5))]
    # the flood's bodies from the flooder's first one (portal 0 of 1), two numbers changed:
    # the generator must outrun the ingress several times over
    head, rest = _body(0, 1, seed).split(b"ID%5D=0&")
    middle, tail = rest.split(b"ts=1736000000&")
    flood_sent = flood_backed_up = quiet_sent = 0
    serial = offset - offset % portals  # quiet serials: portal index + k * portals
    started = loop.time()
    while (elapsed := loop.time() - started) < seconds:
        for _ in range(int(elapsed * flood_rate) - flood_sent - flood_backed_up):
            connection = floods[(flood_sent + flood_backed_up) % len(floods)]
            if connection.transport is None or connection.owed >= FLOOD_WINDOW:
                flood_backed_up += 1  # a real sender would time out on it
                continue
            number = offset + flood_sent
            connection.send(
                _framed(b"%bID%%5D=%d&%bts=%d&%b" % (head, number, middle, 1_736_000_000 + number, tail))
            )
            flood_sent += 1
        for _ in range(int(elapsed * quiet * quiet_rate) - quiet_sent):
            index = 1 + FLOOD_MEMBER + quiet_sent % quiet
            if index == 1 + FLOOD_MEMBER:
                serial += portals
            calm[quiet_sent % len(calm)].send(_framed(_body(serial + index, portals, seed)))
            quiet_sent += 1
        await asyncio.sleep(TICK)
    await _answered(calm, 60)  # every quiet event's answer, however late
    await _answered(floods, 10)
    for connection in [*floods, *calm]:
        if connection.transport is not None:
            connection.transport.close()
    return {
        "flood_offered": flood_sent + flood_backed_up,
        "flood_sent": flood_sent,
        "flood": flood_statuses,
        "quiet_sent": quiet_sent,
        "quiet": quiet_statuses,
        "seconds": seconds,
    }


# --- the orchestration -------------------------------------------------------------------
@contextlib.contextmanager
def _fsync_always(client: redis.Redis) -> Iterator[None]:
    """`appendfsync always` for one `fsync` round, `everysec` again after it."""
    client.config_set("appendfsync", "always")
    try:
        yield
    finally:
        client.config_set("appendfsync", "everysec")


@contextlib.contextmanager
def _replica_attached(server: LocalServer | None, workdir: Path) -> Iterator[str]:
    """A replica of the bench's own server while the modes are measured; the note for the
    `replica` figures ("n/a: ..." when there is no server of our own to attach it to)."""
    if server is None:
        yield "n/a: needs the bench's own server (REDIS_URL is set)"
        return
    replica = start_server(workdir / "replica", extra=["--replicaof", "127.0.0.1", str(server.port)])
    try:
        link = redis.Redis(port=replica.port)
        deadline = time.monotonic() + 30
        while link.info("replication").get("master_link_status") != "up" and time.monotonic() < deadline:
            time.sleep(0.1)
        yield "WAIT 1, one local replica"
    finally:
        replica.stop()


def _can_configure(client: redis.Redis) -> bool:
    try:
        return client.config_get("appendfsync").get("appendfsync") == "everysec"
    except redis.ResponseError:
        return False


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(value["calls"]) for value in stats.values())


def _wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not start")


def _seed(client: redis.Redis, keys: Keys, portals: int, seed: str) -> None:
    pipe = client.pipeline(transaction=False)
    for index in range(portals):
        member = member_of(index)
        portal = Portal(member_id=member, domain=f"p{index}.bitrix24.ru")
        pipe.hset(keys.portal(member), mapping=portal.to_hash())
        pipe.sadd(keys.portals, member)
        pipe.hset(keys.app_tokens(member), digest(token_of(seed, member)), AcceptedToken("app").encode())
    pipe.incr(keys.portals_version)
    pipe.execute()


def _clean_redis(workdir: Path, namespace: str) -> tuple[str, LocalServer | None, redis.Redis]:
    """The Redis at `REDIS_URL`, else a server of the bench's own under `workdir`, with the
    `namespace`'s keys and queued jobs of an earlier run gone."""
    server: LocalServer | None = None
    url = os.environ.get("REDIS_URL")
    if not url:
        server = start_server(workdir / "redis")
        url = server.url
    client = redis.Redis.from_url(url)
    keys = Keys(namespace)
    for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        client.delete(key)
    for queue in keys.queues:
        for job_id in client.lrange(rqkeys.queue(queue), 0, -1):
            client.delete(rqkeys.job(job_id.decode() if isinstance(job_id, bytes) else job_id))
        client.delete(rqkeys.queue(queue))
    return url, server, client


def prepare(
    workdir: Path, portals: int, namespace: str = NAMESPACE
) -> tuple[LocalServer | None, redis.Redis, dict[str, str]]:
    """A clean Redis (`_clean_redis`) seeded with `portals` portals of `namespace` and their
    tokens, and the environment the ingress processes and the load generators run with."""
    seed = secrets.token_hex(8)
    url, server, client = _clean_redis(workdir, namespace)
    _seed(client, Keys(namespace), portals, seed)
    env = {
        **os.environ,
        "REDIS_URL": url,
        "B24PIPE_NAMESPACE": namespace,
        "B24PIPE_TOKEN_KEYS": generate_key(),
        "B24PIPE_DEDUPE_WINDOW": "300",
        "BENCH_SEED": seed,
        "BENCH_PORTALS": str(portals),
    }
    return server, client, env


def main() -> int:
    rounds = knob("BENCH_ROUNDS", 5, 1)
    seconds = knob("BENCH_SECONDS", 3.0, 0.1)
    connections = knob("BENCH_CONNECTIONS", 64, 1)
    portals = knob("BENCH_PORTALS", 500, 2)
    flood_cap = knob("BENCH_FLOOD_CAP", 256, 2)
    flood_connections = knob("BENCH_FLOOD_CONNECTIONS", 512, 1)
    quiet, quiet_rate = min(50, portals - 1), knob("BENCH_QUIET_RATE", 10.0, 0.1)
    workdir = Path(tempfile.mkdtemp(prefix="b24pipe-bench-"))
    server, client, env = prepare(workdir, portals)
    keys = Keys(NAMESPACE)
    default_ack = os.environ.get("B24PIPE_ACK", "written")
    ingress_port, bare_port, two_port, flood_port = free_port(), free_port(), free_port(), free_port()

    def start_ingress(port: int, ack: str, *extra: str, **more_env: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "b24pipe", "ingress", "--host", "127.0.0.1", "--port", str(port), *extra],
            env={**env, "B24PIPE_ACK": ack, **more_env},
            stderr=subprocess.DEVNULL,
        )

    ingress = start_ingress(ingress_port, default_ack)
    bare_proc = subprocess.Popen([sys.executable, "-m", "bench.ingress", "bare", str(bare_port)], env=env)
    two = start_ingress(two_port, default_ack, "--processes", "2")
    flooded = start_ingress(flood_port, default_ack, B24PIPE_MAX_INFLIGHT=str(flood_cap))
    mode_ports = {mode: free_port() for mode in ACK_MODES}
    mode_procs = {mode: start_ingress(port, mode) for mode, port in mode_ports.items()}
    modes: dict[str, list[dict[str, Any]]] = {mode: [] for mode in ACK_MODES}
    notes: dict[str, str] = {}
    results: dict[str, list[dict[str, Any]]] = {"ingress": [], "bare": [], "2 processes": []}
    flood: dict[str, Any] = {}
    flood_jobs = 0
    cpu = bare_cpu = 0.0
    commands = 0
    offset = 0

    def next_offset() -> int:
        nonlocal offset
        offset += 10_000_000
        return offset

    def queued() -> int:
        return sum(int(client.llen(rqkeys.queue(q))) for q in keys.queues)

    try:
        _wait_port(ingress_port, ingress)
        _wait_port(bare_port, bare_proc)
        _wait_port(two_port, two)

        def run(port: int) -> dict[str, Any]:
            argv = [str(port), str(seconds), str(connections), str(portals), str(next_offset())]
            out = subprocess.run(
                [sys.executable, "-m", "bench.ingress", "load", *argv],
                env=env,
                capture_output=True,
                check=True,
            )
            result: dict[str, Any] = orjson.loads(out.stdout)
            return result

        run(ingress_port)  # warm-up: token cache, script load, connections
        run(bare_port)
        run(two_port)
        warm_jobs = queued()
        for _ in range(rounds):
            cpu_before, commands_before = _cpu_seconds(ingress.pid), _commands(client)
            results["ingress"].append(run(ingress_port))
            cpu += _cpu_seconds(ingress.pid) - cpu_before
            commands += _commands(client) - commands_before
            bare_before = _cpu_seconds(bare_proc.pid)
            results["bare"].append(run(bare_port))
            bare_cpu += _cpu_seconds(bare_proc.pid) - bare_before
            results["2 processes"].append(run(two_port))
        jobs = queued() - warm_jobs

        # the modes alternate within each round, like ingress and bare above, so that a
        # change of load on the machine shows in all of them alike
        with _replica_attached(server, workdir) as replica_note:
            notes.update(written="appendfsync everysec", fsync="appendfsync always", replica=replica_note)
            if not _can_configure(client):
                notes["fsync"] = "n/a: appendfsync cannot be switched (CONFIG refused or not everysec)"
            active = [mode for mode in ACK_MODES if not notes[mode].startswith("n/a")]

            def run_mode(mode: str) -> dict[str, Any]:
                with _fsync_always(client) if mode == "fsync" else contextlib.nullcontext():
                    return run(mode_ports[mode])

            for mode in active:
                _wait_port(mode_ports[mode], mode_procs[mode])
                run_mode(mode)  # warm-up
            before = queued()
            for _ in range(rounds):
                for mode in active:
                    modes[mode].append(run_mode(mode))
            jobs += queued() - before

        # one portal floods a process at its in-flight cap while 50 others keep their pace
        _wait_port(flood_port, flooded)
        run(flood_port)  # warm-up: every portal's tokens cached
        capacity = statistics.median(r["rps"] for r in results["ingress"])
        before = queued()
        argv = [
            flood_port,
            seconds,
            5 * capacity,
            quiet,
            quiet_rate,
            portals,
            next_offset(),
            flood_connections,
        ]
        out = subprocess.run(
            [sys.executable, "-m", "bench.ingress", "flood", *map(str, argv)],
            env=env,
            capture_output=True,
            check=True,
        )
        flood = orjson.loads(out.stdout)
        flood_jobs = queued() - before
    finally:
        for process in (ingress, bare_proc, two, flooded, *mode_procs.values()):
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            if process.poll() is None:
                process.kill()
        if server is not None:
            server.stop()
    measured = sum(r["ok"] for r in results["ingress"])
    accepted = (
        measured
        + sum(r["ok"] for r in results["2 processes"])
        + sum(r["ok"] for m in modes.values() for r in m)
    )
    flood_accepted = _count(flood["flood"], 200) + _count(flood["quiet"], 200)

    def median(side: str, field: str) -> float:
        return float(statistics.median(r[field] for r in results[side]))

    ratio = median("ingress", "rps") / median("bare", "rps")
    p99_ratio = median("ingress", "p99_ms") / max(median("bare", "p99_ms"), 1e-9)
    loop_name = event_loop()[0]
    print(f"ingress benchmark: {rounds} rounds x {seconds:g}s, {connections} connections, {portals} portals")
    print(f"  event loop: {loop_name} on both sides; B24PIPE_ACK={default_ack}")
    for side in ("ingress", "bare"):
        others = {k: v for r in results[side] for k, v in r["statuses"].items() if str(k) != "200"}
        print(
            f"  {side:8s} {median(side, 'rps'):9.0f} events/s   p50 {median(side, 'p50_ms'):6.2f} ms"
            f"   p99 {median(side, 'p99_ms'):6.2f} ms   non-200: {others or 'none'}"
        )
    print(
        f"  ratio ingress/bare: {ratio:.2f} (target >= 0.60); p99 ingress/bare: {p99_ratio:.2f} (target <= 2)"
    )
    print(
        f"  redis commands per event: {commands / max(measured, 1):.2f} (incl. commands run inside scripts)"
    )
    bare_events = max(sum(r["ok"] for r in results["bare"]), 1)
    print(
        f"  CPU per event: ingress {cpu * 1e6 / max(measured, 1):.0f} us, bare {bare_cpu * 1e6 / bare_events:.0f} us"
    )
    two_rps = median("2 processes", "rps")
    print(
        f"  processes: 1 -> {median('ingress', 'rps'):.0f} events/s, 2 -> {two_rps:.0f} events/s"
        f" (p99 {median('2 processes', 'p99_ms'):.2f} ms), ratio 2/1: {two_rps / max(median('ingress', 'rps'), 1e-9):.2f}"
        f" (one load generator; {os.cpu_count()} cores shared by generator, ingress and Redis)"
    )
    print("  acknowledgement modes (B24PIPE_ACK), same load, medians:")
    written = statistics.median(r["rps"] for r in modes["written"]) if modes["written"] else 0.0
    for mode in ACK_MODES:
        if not modes[mode]:
            print(f"    {mode:8s} {notes.get(mode, 'n/a')}")
            continue
        rps = statistics.median(r["rps"] for r in modes[mode])
        p99 = statistics.median(r["p99_ms"] for r in modes[mode])
        others = {k: v for r in modes[mode] for k, v in r["statuses"].items() if str(k) != "200"}
        print(
            f"    {mode:8s} {rps:9.0f} events/s   p99 {p99:6.2f} ms   x{rps / max(written, 1e-9):.2f} of written"
            f"   non-200: {others or 'none'}   ({notes[mode]})"
        )
    quiet_share = _count(flood["quiet"], 200) / max(flood["quiet_sent"], 1)
    flood_share = _count(flood["flood"], 200) / max(flood["flood_offered"], 1)
    print(
        f"  fair overload (B24PIPE_MAX_INFLIGHT={flood_cap}, {seconds:g}s): one portal offers"
        f" {flood['flood_offered'] / flood['seconds']:.0f} events/s (5x {capacity:.0f}) over"
        f" {flood_connections} connections, {quiet} others {quiet_rate:g}/s each"
    )
    print(
        f"    quiet portals: {quiet_share:.2%} accepted (target >= 99 %), answers {_statuses(flood['quiet'])}"
        f" of {flood['quiet_sent']}"
    )
    print(
        f"    flooder:       {flood_share:.2%} accepted, answers {_statuses(flood['flood'])}"
        f" of {flood['flood_sent']} sent, {flood['flood_offered'] - flood['flood_sent']} not sent"
        " (its connections backed up)"
    )
    print(
        f"  jobs in Redis: {jobs}, 200s from the ingress: {accepted}: {'OK' if jobs == accepted else 'MISMATCH'}"
        f"; under the flood {flood_jobs} for {flood_accepted} 200s"
        f" ({flood_jobs - flood_accepted} stored without a 200: 503 at their deadline, written later)"
    )
    found = problems(results, jobs, modes)
    if flood_jobs < flood_accepted:
        found.append(f"under the flood {flood_jobs} jobs in Redis for {flood_accepted} 200s")
    if quiet_share < 0.99:
        found.append(f"the quiet portals had {quiet_share:.2%} of their events accepted under the flood")
    return verdict(found)


def _count(statuses: dict[str, int], status: int) -> int:
    return sum(count for code, count in statuses.items() if int(code) == status)


def _statuses(statuses: dict[str, int]) -> str:
    return ", ".join(f"{code}: {count}" for code, count in sorted(statuses.items())) or "none"


def problems(
    results: dict[str, list[dict[str, Any]]], jobs: int, modes: dict[str, list[dict[str, Any]]] | None = None
) -> list[str]:
    """Why this run's figures mean nothing (empty: they stand)."""
    runs = {**results, **{f"{mode} mode": rounds for mode, rounds in (modes or {}).items() if rounds}}
    found = side_problems(runs)
    accepted = sum(r["ok"] for side, rounds in runs.items() if side != "bare" for r in rounds)
    if jobs != accepted:
        found.append(f"{jobs} jobs in Redis for {accepted} 200s")
    return found


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "bare":
        bare(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "load":
        load_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "flood":
        flood_main(sys.argv[2:])
    else:
        raise SystemExit(main())
