"""`make bench-ingress`: the ingress against a bare aiohttp app, same load, same run.

Starts its own Redis (unless `REDIS_URL` is set), seeds portals with application tokens,
and starts two servers: the real ingress (`b24pipe ingress`, one process) and a bare
aiohttp app that reads the body and answers the same JSON. A load generator in its own
process keeps 64 keep-alive connections busy with realistic form-encoded events, every
one distinct, from many portals with valid tokens. Rounds alternate between the two
servers; the figures are medians over rounds. It prints accepted events/s, p50/p99 for
both, their ratio, Redis commands and ingress CPU microseconds per event, and checks that
the jobs in Redis equal the 200s the ingress gave.

Then the same load on one ingress per acknowledgement mode (`B24PIPE_ACK`), side by side,
alternating within each round: `written`; `fsync` with the server switched to `appendfsync
always` for its rounds; and `replica` with a replica of the bench's own server attached
(each skipped, with a note, when `REDIS_URL` names a server the bench cannot reconfigure).

Knobs (environment): BENCH_ROUNDS (5), BENCH_SECONDS (3), BENCH_CONNECTIONS (64),
BENCH_PORTALS (500).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import redis

from b24pipe.redisserver import LocalServer, free_port, start_server
from bench.verdict import non_200, verdict
from shared import rqkeys
from shared.ackmode import ACK_MODES
from shared.crypto import digest, generate_key
from shared.keys import Keys
from shared.portals import AcceptedToken, Portal

NAMESPACE = "bench"
OK = b'{"status":"ok","message":"event accepted"}'
_EVENTS = ("ONCRMDEALUPDATE", "ONCRMCONTACTUPDATE", "ONCRMLEADADD", "ONTASKUPDATE", "ONCRMCOMPANYUPDATE")


def token_of(seed: str, member_id: str) -> str:
    return hashlib.sha256(f"{seed}:{member_id}".encode()).hexdigest()[:32]


def member_of(index: int) -> str:
    return hashlib.md5(f"portal-{index}".encode(), usedforsecurity=False).hexdigest()


# --- the bare app ------------------------------------------------------------------------
def bare(port: int) -> None:
    from aiohttp import web

    async def events(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=OK, content_type="application/json")

    app = web.Application()
    app.router.add_post("/b24/events", events)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


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
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end]
        length_at = head.lower().find(b"content-length:")
        length = int(head[length_at + 15 :].split(b"\r\n", 1)[0]) if length_at >= 0 else 0
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        self.buffer = self.buffer[end + 4 + length :]
        self.gen.record(status, time.perf_counter() - self.sent_at)
        self.send()


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
        body = _body(self.serial, self.portals, self.seed)
        return (
            b"POST /b24/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )

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


def _clean_redis(workdir: Path) -> tuple[str, LocalServer | None, redis.Redis]:
    """The Redis at `REDIS_URL`, else a server of the bench's own under `workdir`, with the
    bench namespace's keys and queued jobs of an earlier run gone."""
    server: LocalServer | None = None
    url = os.environ.get("REDIS_URL")
    if not url:
        server = start_server(workdir / "redis")
        url = server.url
    client = redis.Redis.from_url(url)
    keys = Keys(NAMESPACE)
    for key in client.scan_iter(match=f"{NAMESPACE}:*", count=1000):
        client.delete(key)
    for queue in keys.queues:
        for job_id in client.lrange(rqkeys.queue(queue), 0, -1):
            client.delete(rqkeys.job(job_id.decode() if isinstance(job_id, bytes) else job_id))
        client.delete(rqkeys.queue(queue))
    return url, server, client


def main() -> int:
    rounds = int(os.environ.get("BENCH_ROUNDS", "5"))
    seconds = float(os.environ.get("BENCH_SECONDS", "3"))
    connections = int(os.environ.get("BENCH_CONNECTIONS", "64"))
    portals = int(os.environ.get("BENCH_PORTALS", "500"))
    seed = secrets.token_hex(8)
    workdir = Path(tempfile.mkdtemp(prefix="b24pipe-bench-"))
    url, server, client = _clean_redis(workdir)
    keys = Keys(NAMESPACE)
    _seed(client, keys, portals, seed)
    env = {
        **os.environ,
        "REDIS_URL": url,
        "B24PIPE_NAMESPACE": NAMESPACE,
        "B24PIPE_TOKEN_KEYS": generate_key(),
        "B24PIPE_DEDUPE_WINDOW": "300",
        "BENCH_SEED": seed,
    }
    ingress_port, bare_port = free_port(), free_port()

    def start_ingress(port: int, ack: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "b24pipe", "ingress", "--host", "127.0.0.1", "--port", str(port)],
            env={**env, "B24PIPE_ACK": ack},
            stderr=subprocess.DEVNULL,
        )

    ingress = start_ingress(ingress_port, os.environ.get("B24PIPE_ACK", "written"))
    bare_proc = subprocess.Popen([sys.executable, "-m", "bench.ingress", "bare", str(bare_port)], env=env)
    mode_ports = {mode: free_port() for mode in ACK_MODES}
    mode_procs = {mode: start_ingress(port, mode) for mode, port in mode_ports.items()}
    modes: dict[str, list[dict[str, Any]]] = {mode: [] for mode in ACK_MODES}
    notes: dict[str, str] = {}
    results: dict[str, list[dict[str, Any]]] = {"ingress": [], "bare": []}
    cpu = 0.0
    commands = 0
    offset = 0
    try:
        _wait_port(ingress_port, ingress)
        _wait_port(bare_port, bare_proc)

        def run(port: int) -> dict[str, Any]:
            nonlocal offset
            offset += 10_000_000
            argv = [str(port), str(seconds), str(connections), str(portals), str(offset)]
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
        warm_jobs = sum(int(client.llen(rqkeys.queue(q))) for q in keys.queues)
        for _ in range(rounds):
            cpu_before, commands_before = _cpu_seconds(ingress.pid), _commands(client)
            results["ingress"].append(run(ingress_port))
            cpu += _cpu_seconds(ingress.pid) - cpu_before
            commands += _commands(client) - commands_before
            results["bare"].append(run(bare_port))

        def queued() -> int:
            return sum(int(client.llen(rqkeys.queue(q))) for q in keys.queues)

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
    finally:
        for process in (ingress, bare_proc, *mode_procs.values()):
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            if process.poll() is None:
                process.kill()
        if server is not None:
            server.stop()
    accepted = sum(r["ok"] for r in results["ingress"]) + sum(r["ok"] for m in modes.values() for r in m)

    def median(side: str, field: str) -> float:
        return float(statistics.median(r[field] for r in results[side]))

    ratio = median("ingress", "rps") / median("bare", "rps")
    print(f"ingress benchmark: {rounds} rounds x {seconds:g}s, {connections} connections, {portals} portals")
    for side in ("ingress", "bare"):
        others = {k: v for r in results[side] for k, v in r["statuses"].items() if str(k) != "200"}
        print(
            f"  {side:8s} {median(side, 'rps'):9.0f} events/s   p50 {median(side, 'p50_ms'):6.2f} ms"
            f"   p99 {median(side, 'p99_ms'):6.2f} ms   non-200: {others or 'none'}"
        )
    print(f"  ratio ingress/bare: {ratio:.2f} (target >= 0.40)")
    print(
        f"  redis commands per event: {commands / max(accepted, 1):.2f} (incl. commands run inside scripts)"
    )
    print(f"  ingress CPU per event: {cpu * 1e6 / max(accepted, 1):.0f} us")
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
    print(
        f"  jobs in Redis: {jobs}, 200s from the ingress: {accepted}: {'OK' if jobs == accepted else 'MISMATCH'}"
    )
    return verdict(problems(results, jobs, modes))


def problems(
    results: dict[str, list[dict[str, Any]]], jobs: int, modes: dict[str, list[dict[str, Any]]] | None = None
) -> list[str]:
    """Why this run's figures mean nothing (empty: they stand)."""
    found = []
    runs = {**results, **{f"{mode} mode": rounds for mode, rounds in (modes or {}).items() if rounds}}
    for side, rounds in runs.items():
        if not sum(r["ok"] for r in rounds):
            found.append(f"the {side} side accepted no event")
        others = non_200({k: v for r in rounds for k, v in r["statuses"].items()})
        if others:
            found.append(f"the {side} side answered non-200: {others}")
    accepted = sum(r["ok"] for side, rounds in runs.items() if side != "bare" for r in rounds)
    if jobs != accepted:
        found.append(f"{jobs} jobs in Redis for {accepted} 200s")
    return found


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "bare":
        bare(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "load":
        load_main(sys.argv[2:])
    else:
        raise SystemExit(main())
