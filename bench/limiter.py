"""`make bench-limiter`: how much of a portal's allowed rate the shared limiter uses, and how
many 503s it draws, against a naive client that only retries on 503 (what the SDKs do).

Same run, same simulator, same plan, same number of processes: each side gets its own
portal so neither inherits the other's bucket. Figures are printed; the run fails (exit 1)
when a side never got past the burst (no rate was measured).
"""

from __future__ import annotations

import base64
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import redis

from b24pipe.redisserver import start_server
from bench.knobs import knob
from bench.verdict import verdict
from shared.crypto import TokenCipher, generate_key
from shared.keys import Keys
from shared.portals import Portal
from shared.settings import load_settings

# BENCH_PROCESSES, BENCH_SECONDS: a smaller run (the smoke test's)
PROCESSES = knob("BENCH_PROCESSES", 8, 1)
DRAIN, BURST = 10.0, 20
SECONDS = knob("BENCH_SECONDS", 8.0, 0.1)
METHOD = "profile"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def control(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(f"{base}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return orjson.loads(answer.read())


def start_simulator(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "b24pipe.sim", "--port", str(port)], env=env, stdout=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base}/_sim/health", timeout=1).close()
            return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("simulator did not start")


def new_portal(base: str, drain: float, burst: int) -> dict[str, Any]:
    info = control(base, "/_sim/portals", {"drain": drain, "burst": burst})
    return dict(control(base, f"/_sim/portals/{info['member_id']}/install", {}))


def seed(r: redis.Redis, ns: str, cipher: TokenCipher, pair: dict[str, Any], plan: str) -> None:
    """Write a portal record the way the install path does."""
    portal = Portal(
        member_id=pair["member_id"], domain=pair["domain"], client_endpoint=pair["client_endpoint"], plan=plan
    )
    portal.seal_tokens(cipher, pair["access_token"], pair["refresh_token"], int(time.time()) + 3600)
    r.hset(Keys(ns).portal(portal.member_id), mapping=portal.to_hash())
    r.sadd(Keys(ns).portals, portal.member_id)


def _ours(env: dict[str, str], member_id: str, start: Any, out: Any) -> None:
    os.environ.update(env)
    from workers.errors import RateLimited
    from workers.rest.client import client_for

    b24 = client_for(load_settings(), None, member_id)
    start.wait()
    until = time.time() + SECONDS
    done = []
    while time.time() < until:
        try:
            b24.call(METHOD)
        except RateLimited as exc:  # a deferral: the worker would run another job meanwhile
            time.sleep(exc.after)
            continue
        done.append(time.time())
    out.put((done, 0))


def _naive(url: str, token: str, start: Any, out: Any) -> None:
    import asyncio

    import aiohttp

    async def main() -> tuple[list[float], int]:
        done, refused = [], 0
        async with aiohttp.ClientSession() as session:
            start.wait()
            until = time.time() + SECONDS
            while time.time() < until:
                async with session.post(url, json={"auth": token}) as answer:
                    await answer.read()
                    if answer.status == 503:
                        refused += 1
                        await asyncio.sleep(1.0)
                        continue
                done.append(time.time())
        return done, refused

    out.put(asyncio.run(main()))


def _run(target: Any, args_of: Any) -> tuple[list[float], int]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Barrier(PROCESSES)  # the window opens once every process is up
    procs = [ctx.Process(target=target, args=(*args_of, start, out)) for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=SECONDS + 120) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
    return sorted(t for done, _ in results for t in done), sum(refused for _, refused in results)


def utilisation(times: list[float], drain: float, burst: int) -> float:
    """Successful requests per second after the burst, as a fraction of the drain rate.

    Measured from the burst's last success, not the first one after it: a client that stops
    for a while (a naive one sleeping after a 503) would otherwise have the capacity that
    drained meanwhile counted as its own speed."""
    if len(times) <= burst or burst < 1:
        return 0.0
    span = times[-1] - times[burst - 1]
    return (len(times) - burst) / span / drain if span > 0 else 0.0


def problems(ours: list[float], naive: list[float], ours_503: Any) -> list[str]:
    """Why this run's figures mean nothing (empty: they stand): a side that never got past
    the burst measured no rate, and without the simulator's count there is no 503 figure."""
    found = []
    for side, times in (("b24pipe", ours), ("naive", naive)):
        if len(times) <= BURST:
            found.append(f"the {side} client made {len(times)} calls: none past the burst of {BURST}")
    if not isinstance(ours_503, dict) or "query_limit_exceeded" not in ours_503:
        found.append("the simulator did not report the b24pipe portal's 503s")
    return found


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp))
        key = generate_key()
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "B24PIPE_NAMESPACE": "benchlimiter",
            "B24PIPE_TOKEN_KEYS": key,
            "B24PIPE_ALLOW_HTTP": "1",
            "B24PIPE_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "B24PIPE_MAX_INPLACE_WAIT": "30",
            "B24_CLIENT_ID": "app.test.client",
            "B24_CLIENT_SECRET": "test-client-secret-value",
        }
        # SIMULATOR_URL: use a simulator already running instead of starting one.
        sim, base = (
            (None, os.environ["SIMULATOR_URL"]) if "SIMULATOR_URL" in os.environ else start_simulator(env)
        )
        try:
            r = redis.Redis.from_url(server.url)
            cipher = TokenCipher([base64.b64decode(key)])
            ours_pair = new_portal(base, DRAIN, BURST)
            naive_pair = new_portal(base, DRAIN, BURST)
            env["B24_OAUTH_URL"] = base
            seed(r, "benchlimiter", cipher, ours_pair, f"custom:{DRAIN:g}/{BURST}")
            ours, _ = _run(_ours, (env, ours_pair["member_id"]))
            ours_503 = control(base, f"/_sim/portals/{ours_pair['member_id']}", None)
            naive_url = f"{naive_pair['client_endpoint'].rstrip('/')}/{METHOD}.json"
            naive, naive_503 = _run(_naive, (naive_url, naive_pair["access_token"]))
        finally:
            if sim is not None:
                sim.terminate()
                sim.wait(timeout=10)
            server.stop()
    print(
        f"limiter bench: {PROCESSES} processes, one portal at {DRAIN:g}/s burst {BURST}, {SECONDS:g}s each side"
    )
    print(
        f"  b24pipe client: {len(ours)} calls, utilisation {utilisation(ours, DRAIN, BURST):.1%},"
        f" 503s received {ours_503.get('query_limit_exceeded', '?')}"
    )
    print(
        f"  naive client:   {len(naive)} calls, utilisation {utilisation(naive, DRAIN, BURST):.1%}, 503s received {naive_503}"
    )
    return verdict(problems(ours, naive, ours_503))


if __name__ == "__main__":
    raise SystemExit(main())
