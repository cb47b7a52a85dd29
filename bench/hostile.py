"""`make bench-hostile`: valid events' acceptance while slow clients and compressed-body
bombs hit the same ingress, against the same load with no attack, in the same run.

Starts its own Redis (unless `REDIS_URL` is set), seeds portals, starts one real ingress
process (`b24pipe ingress`, default settings: 2,048 in-flight slots, 5 s read timeout) and
measures a valid load (`bench.ingress`'s generator: keep-alive connections, distinct
Bitrix24-shaped events with valid tokens) twice: alone, then while an attacker process
keeps BENCH_SLOW connections trickling (half send a body a byte per second, half their
headers; each reconnects when cut off) and posts a gzip bomb (BENCH_BOMB_MB inflated)
every 0.2 s. It prints both rounds' acceptance (200s / requests) and events/s, their
ratio, what the attacker saw (connections cut off, bomb answers), the log lines the
ingress wrote under attack, and checks that the jobs in Redis equal the 200s.

Exit status 1 when the run did no real work (no 200s, no slow client connected, no bomb
answered) or a 200 is not backed by a job, or the valid load got another status than 200
or 503. The goal printed (>= 99 % accepted under attack) is a figure, not a verdict.

Knobs (environment): BENCH_SECONDS (5), BENCH_CONNECTIONS (16), BENCH_PORTALS (200),
BENCH_SLOW (2000), BENCH_BOMB_MB (256).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import orjson

from b24pipe.redisserver import free_port
from bench.ingress import _wait_port, prepare
from bench.knobs import knob
from shared import rqkeys
from shared.keys import Keys

NAMESPACE = "bench-hostile"
GOAL = 0.99
TRICKLE_EVERY = 1.0  # seconds between two bytes of a slow client
BOMB_EVERY = 0.2
SETUP_LIMIT = 30.0  # seconds the attacker may take to open its slow connections


# --- the attacker ------------------------------------------------------------------------
def _bomb(megabytes: int) -> bytes:
    """A gzip body that inflates to `megabytes` MiB of zeros (about 1/1000 of that on the wire)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    chunk = bytes(1 << 20)
    parts = [packer.compress(chunk) for _ in range(megabytes)]
    return b"".join(parts) + packer.flush()


class _Attack:
    def __init__(self, port: int, until: float, clients: int) -> None:
        self.port = port
        self.until = until
        self.clients = clients
        self.all_connected = asyncio.Event()
        self.connected = 0
        self.peak = 0
        self.cut_off = 0
        self.bombs: dict[str, int] = {}

    async def slow(self, header_only: bool) -> None:
        """One slow client, reconnecting whenever the server cuts it off."""
        while time.monotonic() < self.until:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(TRICKLE_EVERY)
                continue
            self.connected += 1
            self.peak = max(self.peak, self.connected)
            if self.peak >= self.clients:
                self.all_connected.set()
            try:
                head = b"POST /b24/events HTTP/1.1\r\nHost: x\r\n"
                if not header_only:
                    head += (
                        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n"
                    )
                writer.write(head)
                while time.monotonic() < self.until and not reader.at_eof():
                    await asyncio.sleep(TRICKLE_EVERY)
                    writer.write(b"a" if not header_only else b"X")
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.01):
                            await reader.read(4096)
                if reader.at_eof():
                    self.cut_off += 1
            except OSError:
                self.cut_off += 1
            finally:
                self.connected -= 1
                writer.close()

    async def bombs_away(self, bomb: bytes) -> None:
        head = (
            b"POST /b24/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Encoding: gzip\r\nConnection: close\r\nContent-Length: "
            + str(len(bomb)).encode()
            + b"\r\n\r\n"
        )
        while time.monotonic() < self.until:
            status = "refused"
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(head + bomb)
                with contextlib.suppress(OSError):
                    await writer.drain()
                line = await reader.readline()
                status = line.split(b" ")[1].decode() if line.count(b" ") >= 2 else "closed"
                writer.close()
            except OSError:
                pass
            self.bombs[status] = self.bombs.get(status, 0) + 1
            await asyncio.sleep(BOMB_EVERY)


async def _attack(port: int, slow: int, bomb_mb: int, seconds: float) -> dict[str, Any]:
    bomb = _bomb(bomb_mb)
    attack = _Attack(port, time.monotonic() + SETUP_LIMIT + seconds, slow)
    tasks = [asyncio.create_task(attack.slow(header_only=n % 2 == 1)) for n in range(slow)]
    tasks.append(asyncio.create_task(attack.bombs_away(bomb)))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SETUP_LIMIT):
            await attack.all_connected.wait()
    attack.until = time.monotonic() + seconds  # the measured round runs inside this
    print("ready", flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"peak": attack.peak, "cut_off": attack.cut_off, "bombs": attack.bombs, "bomb_bytes": len(bomb)}


def attack_main(argv: list[str]) -> None:
    port, slow, bomb_mb, seconds = int(argv[0]), int(argv[1]), int(argv[2]), float(argv[3])
    result = asyncio.run(_attack(port, slow, bomb_mb, seconds))
    print(orjson.dumps(result).decode(), flush=True)


# --- the orchestration -------------------------------------------------------------------
def _load(env: dict[str, str], port: int, seconds: float, connections: int, portals: int, offset: int) -> Any:
    argv = [str(port), str(seconds), str(connections), str(portals), str(offset)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.ingress", "load", *argv], env=env, capture_output=True, check=True
    )
    return orjson.loads(done.stdout)


def _acceptance(result: dict[str, Any]) -> float:
    total = sum(int(count) for count in result["statuses"].values())
    return int(result["ok"]) / total if total else 0.0


def main() -> int:
    seconds = knob("BENCH_SECONDS", 5.0, 0.1)
    connections = knob("BENCH_CONNECTIONS", 16, 1)
    portals = knob("BENCH_PORTALS", 200, 1)
    slow = knob("BENCH_SLOW", 2000)
    bomb_mb = knob("BENCH_BOMB_MB", 256, 1)
    workdir = Path(tempfile.mkdtemp(prefix="b24pipe-bench-hostile-"))
    server, client, env = prepare(workdir, portals, NAMESPACE)
    keys = Keys(NAMESPACE)
    port = free_port()
    log_path = workdir / "ingress.log"
    with open(log_path, "wb") as log_file:
        ingress = subprocess.Popen(
            [sys.executable, "-m", "b24pipe", "ingress", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stderr=log_file,
        )
    attacker: subprocess.Popen[bytes] | None = None
    try:
        _wait_port(port, ingress)
        _load(env, port, 1, connections, portals, 1)  # warm-up: token cache, scripts, connections
        warm_jobs = int(client.llen(rqkeys.queue(keys.events_queue)))
        baseline = _load(env, port, seconds, connections, portals, 10_000_000)
        attack_seconds = seconds + 2  # the measured round, inside the attack
        attacker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.hostile",
                "attack",
                str(port),
                str(slow),
                str(bomb_mb),
                str(attack_seconds),
            ],
            env=env,
            stdout=subprocess.PIPE,
        )
        assert attacker.stdout is not None
        ready = attacker.stdout.readline()
        log_before = log_path.stat().st_size
        attacked = _load(env, port, seconds, connections, portals, 20_000_000)
        log_bytes = log_path.stat().st_size - log_before
        seen: dict[str, Any] = orjson.loads(attacker.stdout.read() or b"{}")
        attacker.wait(SETUP_LIMIT + attack_seconds)
        jobs = int(client.llen(rqkeys.queue(keys.events_queue))) - warm_jobs
        alive = ingress.poll() is None
    finally:
        for process in (attacker, ingress):
            if process is not None and process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
                if process.poll() is None:
                    process.kill()
        if server is not None:
            server.stop()
    accepted = int(baseline["ok"]) + int(attacked["ok"])
    rate = attacked["rps"] / baseline["rps"] if baseline["rps"] else 0.0
    under_attack = _acceptance(attacked)
    print(f"hostile benchmark: {seconds:g}s rounds, {connections} valid connections, {portals} portals")
    print(
        f"  attack: {slow} slow clients (ready: {ready.strip().decode() or 'no'}), gzip bombs of {bomb_mb} MiB"
    )
    for name, result in (("no attack", baseline), ("attacked", attacked)):
        print(
            f"  {name:9s} accepted {_acceptance(result) * 100:6.2f} %   {result['rps']:7.0f} events/s"
            f"   p99 {result['p99_ms']:7.2f} ms   statuses: {result['statuses']}"
        )
    print(f"  events/s attacked / no attack: {rate:.2f}")
    print(f"  acceptance under attack: {under_attack * 100:.2f} % (goal >= {GOAL * 100:.0f} %)")
    print(
        f"  slow clients connected at peak: {seen.get('peak', 0)}, cut off by the read timeouts: "
        f"{seen.get('cut_off', 0)}; bombs ({seen.get('bomb_bytes', 0)} bytes each) answered: {seen.get('bombs')}"
    )
    print(f"  ingress log under attack: {log_bytes} bytes; ingress still running: {alive}")
    statuses = {str(k) for result in (baseline, attacked) for k in result["statuses"]}
    problems = []
    if accepted == 0:
        problems.append("no event accepted")
    if jobs != accepted:
        problems.append(f"{jobs} jobs for {accepted} 200s")
    if not statuses <= {"200", "503"}:
        problems.append(f"unexpected statuses {sorted(statuses)}")
    if not seen.get("peak") or not seen.get("bombs"):
        problems.append("the attack did not run")
    if not alive:
        problems.append("the ingress died")
    print(f"  jobs in Redis: {jobs}, 200s from the ingress: {accepted}: {'; '.join(problems) or 'OK'}")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "attack":
        attack_main(sys.argv[2:])
    else:
        raise SystemExit(main())
