"""`make bench-ingress-steps`: where the ingress's time per event goes, step by step.

`make bench-ingress` compares the whole ingress with a bare aiohttp app. This benchmark puts
apps between the two, each doing one step more of the event path with the ingress's own
functions, so the cost of every step shows as a share of bare aiohttp, measured in the same
run under the same load (the `bench.ingress` generator: 64 connections, distinct
Bitrix24-shaped events from 500 portals):

- `bare`: read the body, answer the contract's 200 (`make bench-ingress`'s baseline);
- `parse`: + decode the form and validate the event (`parse_body`, `Plain.read`);
- `check`: + the application-token decision on a cached portal (`tokencheck.decide`);
- `job`: + the queued form and its RQ job (`Plain.queued_form`, `QueuedJob.of`);
- `ingress`: `b24pipe ingress` itself, which also takes a slot, counts metrics and writes the
  job to Redis durably before it answers;
- and, for reference, `post`: `bare` + aiohttp's own form decoding (`request.post()`: flat
  name/value pairs, no PHP nesting, no validation), the cheapest decoding aiohttp offers.

Every app runs in its own process on the ingress's event loop (`ingress.server.event_loop`);
rounds alternate between them and the figures are medians. Knobs (environment):
BENCH_ROUNDS (3), BENCH_SECONDS (3), BENCH_CONNECTIONS (64), BENCH_PORTALS (500).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from b24pipe.redisserver import free_port
from bench.ingress import NAMESPACE, OK, _cpu_seconds, _wait_port, member_of, prepare, serve_events, token_of
from bench.knobs import knob
from bench.verdict import side_problems, verdict
from ingress.server import event_loop
from shared.crypto import digest
from shared.keys import Keys
from shared.portals import AcceptedToken

STEPS = ("bare", "parse", "check", "job")
REFERENCE = "post"


def serve(step: str, port: int) -> None:
    """An aiohttp app that does the event path up to `step` and answers 200 (400/401 where
    the ingress would refuse)."""
    from aiohttp import web
    from aiohttp.hdrs import CONTENT_TYPE

    from ingress.delivery import Plain
    from ingress.formparse import media_type, parse_body
    from ingress.tokencheck import PortalTokens, Verdict, decide
    from shared.jobs import QueuedJob
    from shared.settings import load_settings

    settings = load_settings()
    keys = Keys(NAMESPACE)
    seed = os.environ["BENCH_SEED"]
    members = (member_of(index) for index in range(int(os.environ["BENCH_PORTALS"])))
    cached = {m: PortalTokens("active", {digest(token_of(seed, m)): AcceptedToken("app")}) for m in members}
    unknown = PortalTokens()

    async def events(request: web.Request) -> web.Response:
        body = await request.read()
        if step == REFERENCE:
            await request.post()
        elif step != "bare":
            content_type, charset = media_type(request.headers.get(CONTENT_TYPE))
            payload = parse_body(
                body,
                content_type,
                charset,
                max_keys=settings.max_form_keys,
                max_depth=settings.max_form_depth,
            )
            plain = Plain.read(payload)
            if plain is None:
                return web.Response(status=400)
            if step != "parse":
                found = cached.get(plain.member_id, unknown)
                if decide(plain.application_token, found, time.time()).verdict is not Verdict.ACCEPT:
                    return web.Response(status=401)
            if step == "job":
                QueuedJob.of(keys, plain.queued_form())
        return web.Response(body=OK, content_type="application/json")

    serve_events(port, events)


def main() -> int:
    rounds = knob("BENCH_ROUNDS", 3, 1)
    seconds = knob("BENCH_SECONDS", 3.0, 0.1)
    connections = knob("BENCH_CONNECTIONS", 64, 1)
    portals = knob("BENCH_PORTALS", 500, 1)
    server, _, env = prepare(Path(tempfile.mkdtemp(prefix="b24pipe-bench-")), portals)
    sides = (*STEPS, "ingress", REFERENCE)
    ports = {side: free_port() for side in sides}
    commands = {side: [sys.executable, "-m", "bench.ingress_steps", "serve", side] for side in sides}
    commands["ingress"] = [sys.executable, "-m", "b24pipe", "ingress", "--host", "127.0.0.1", "--port"]
    processes = {
        side: subprocess.Popen([*command, str(ports[side])], env=env, stderr=subprocess.DEVNULL)
        for side, command in commands.items()
    }
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in processes}
    cpu = dict.fromkeys(processes, 0.0)
    offset = 0

    def load(side: str) -> dict[str, Any]:
        nonlocal offset
        offset += 10_000_000
        argv = [str(ports[side]), str(seconds), str(connections), str(portals), str(offset)]
        out = subprocess.run(
            [sys.executable, "-m", "bench.ingress", "load", *argv], env=env, capture_output=True, check=True
        )
        result: dict[str, Any] = orjson.loads(out.stdout)
        return result

    try:
        for side, process in processes.items():
            _wait_port(ports[side], process)
            load(side)  # warm-up: imports, caches, the ingress's script and connections
        for _ in range(rounds):
            for side, process in processes.items():
                before = _cpu_seconds(process.pid)
                results[side].append(load(side))
                cpu[side] += _cpu_seconds(process.pid) - before
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(10)
        if server is not None:
            server.stop()
    print(report(results, cpu, rounds, seconds, connections, portals))
    return verdict(side_problems(results))


def report(
    results: dict[str, list[dict[str, Any]]],
    cpu: dict[str, float],
    rounds: int,
    seconds: float,
    connections: int,
    portals: int,
) -> str:
    rps = {side: statistics.median(r["rps"] for r in runs) for side, runs in results.items()}
    lines = [
        f"ingress steps: {rounds} rounds x {seconds:g}s, {connections} connections, {portals} portals,"
        f" {event_loop()[0]} everywhere; each line adds one step to the one above",
    ]
    for side, runs in results.items():
        if side == REFERENCE:
            lines.append("  for reference, bare + aiohttp's own flat form decoding (request.post()):")
        events = max(sum(r["ok"] for r in runs), 1)
        lines.append(
            f"  {side:8s} {rps[side]:9.0f} events/s   x{rps[side] / max(rps['bare'], 1e-9):.2f} of bare"
            f"   CPU {cpu[side] * 1e6 / events:5.0f} us/event"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(main())
