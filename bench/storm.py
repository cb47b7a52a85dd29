"""`make bench-storm`: the REST economy of an event storm (DESIGN §4).

1,000 ONCRMDEALUPDATE over 200 deals of one standard portal (2 requests/s, burst 50), caused
by a person and delivered as fast as they are accepted; the simulator sends an event back for
every change, the app's own writes included. Two sides in one run, each on its own portal:

- b24pipe: the real ingress and worker processes, the sample handler of
  b24pipe/testing/storm_handlers.py (reads each deal, writes one field; coalesce and batch on);
- naive: one handler run and two REST calls per event (b24pipe/testing/storm_naive_handlers.py), four
  consumers behind an in-process queue that answers Bitrix24 at once, a retry after 1 s on
  503, no guards, no coalescing. It loops on its own echoes, so it is stopped after NAIVE_FOR
  seconds and its figures so far are printed.

Printed: REST requests, 503s, time to drain, echoes suppressed, handler runs, and the ratio
of REST requests. The behaviour is asserted by tests/workers/guards/test_storm_e2e.py; the run fails (exit 1)
when a side handled or received nothing or the ingress refused deliveries.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis
from aiohttp import web

from b24pipe.redisserver import free_port, start_server
from b24pipe.sim.client import SimClient
from b24pipe.sim.fixture import start_simulator, stop
from b24pipe.testing.storm_naive_handlers import NaiveCounts, review_deal
from b24pipe.testing.storms import (
    DEALS,
    EVENTS,
    INSTALLER,
    PERSON,
    final_titles,
    install,
    pipeline,
    pipeline_env,
    quiet_for,
    run_storm,
    runs,
    storm_changes,
)
from bench.knobs import knob
from bench.verdict import non_200, verdict
from ingress.formparse import parse_form
from shared.crypto import generate_key
from shared.keys import Keys

# BENCH_EVENTS, BENCH_DEALS, BENCH_NAIVE_SECONDS: a smaller storm (the smoke test's)
STORM_EVENTS = knob("BENCH_EVENTS", EVENTS, 1)
STORM_DEALS = knob("BENCH_DEALS", DEALS, 1)
NAIVE_FOR = knob("BENCH_NAIVE_SECONDS", 60.0)  # the naive side never stops by itself
NAIVE_CONSUMERS = 4
NAMESPACE = "benchstorm"


def b24pipe_side(simulator: SimClient, redis_url: str) -> dict[str, Any]:
    base = {
        "REDIS_URL": redis_url,
        "B24PIPE_NAMESPACE": NAMESPACE,
        "B24PIPE_TOKEN_KEYS": generate_key(),
    }
    r, keys = redis.Redis.from_url(redis_url), Keys(NAMESPACE)
    with pipeline(pipeline_env({**os.environ, **base}, simulator)) as running:
        member_id, ids = install(simulator, r, keys, running, STORM_DEALS)
        result = run_storm(simulator, r, keys, member_id, ids, events=STORM_EVENTS)
        quiet = quiet_for(simulator, r, keys, member_id)
        handler_runs = runs(r, keys)
        return {
            "requests": result.requests,
            "refused": result.refused,
            "ingress": result.ingress,
            "drain": result.drain,
            "echoes": running.metric("b24pipe_echo_suppressed_total"),
            "merged": running.metric("b24pipe_coalesced_total"),
            "queued": sum(
                running.metric("b24pipe_worker_jobs_total", event="ONCRMDEALUPDATE", outcome=outcome)
                for outcome in ("ok", "merged")
            ),
            "runs": len(handler_runs),
            "events_handled": sum(run["events"] for run in handler_runs),
            "quiet": quiet,
        }


async def naive_side(simulator: SimClient) -> dict[str, Any]:
    portal = simulator.create_portal(plan="standard")
    counts = NaiveCounts()
    received = 0
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def receive(request: web.Request) -> web.Response:
        nonlocal received
        form = parse_form(await request.read(), max_keys=1000, max_depth=8)
        deal_id = ((form.get("data") or {}).get("FIELDS") or {}).get("ID")
        if form.get("event") == "ONCRMDEALUPDATE" and deal_id:
            received += 1
            queue.put_nowait(str(deal_id))
        return web.json_response({"status": "ok", "message": "event accepted"})

    app = web.Application()
    app.router.add_post("/events", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        pair = await asyncio.to_thread(
            simulator.install,
            portal.member_id,
            handler_url=f"http://127.0.0.1:{port}/events",
            user_id=INSTALLER,
            bind_events=["ONCRMDEALUPDATE"],
        )
        added = await asyncio.to_thread(
            simulator.apply_changes,
            portal.member_id,
            [{"action": "add", "fields": {"TITLE": "new"}}] * STORM_DEALS,
            user_id=PERSON,
        )
        changes = storm_changes([int(i) for i in added["ids"]], STORM_EVENTS)
        before = await asyncio.to_thread(simulator.stats, portal.member_id)
        async with aiohttp.ClientSession() as session:

            async def consume() -> None:
                while True:
                    deal_id = await queue.get()
                    await review_deal(session, pair.client_endpoint, pair.access_token, deal_id, counts)

            consumers = [asyncio.create_task(consume()) for _ in range(NAIVE_CONSUMERS)]
            started = time.monotonic()
            answer = await asyncio.to_thread(
                simulator.apply_changes, portal.member_id, changes, user_id=PERSON
            )
            latest, drained = final_titles(changes), None
            while time.monotonic() - started < NAIVE_FOR:
                if drained is None and counts.seen == latest and queue.empty():
                    drained = time.monotonic() - started  # (never: its echoes keep it busy)
                await asyncio.sleep(0.1)
            for task in consumers:
                task.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)
        after = await asyncio.to_thread(simulator.stats, portal.member_id)
    finally:
        await runner.cleanup()
    return {
        "requests": after["requests_total"] - before["requests_total"],
        "refused": after["query_limit_exceeded"] - before["query_limit_exceeded"],
        "ingress": {str(k): int(v) for k, v in answer["statuses"].items()},
        "drain": drained,
        "runs": counts.runs,
        "received": received,
        "backlog": queue.qsize(),
        "latest": sum(1 for deal_id, title in latest.items() if counts.seen.get(deal_id) == title),
    }


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "redis")
        process, simulator = start_simulator(Path(tmp) / "simulator.log")
        try:
            ours = b24pipe_side(simulator, server.url)
            naive = asyncio.run(naive_side(simulator))
        finally:
            stop(process)
            server.stop()
    print(
        f"storm bench: {STORM_EVENTS} ONCRMDEALUPDATE over {STORM_DEALS} deals, one standard portal (2/s, burst 50)"
    )
    print(
        f"  b24pipe: {ours['requests']} REST requests, {ours['refused']} 503s,"
        f" drain {ours['drain']:.1f} s, {ours['echoes']:.0f} echoes suppressed,"
        f" {ours['runs']} handler run{'s' if ours['runs'] != 1 else ''} (batch) on"
        f" {ours['events_handled']} events, {ours['merged']:.0f} merged,"
        f" {ours['queued']:.0f} storm events queued ({STORM_EVENTS - ours['queued']:.0f} with identical payloads"
        " (same deal, same second) dropped by the ingress as duplicates),"
        f" ingress answers {ours['ingress']}, quiet afterwards: {'yes' if ours['quiet'] else 'NO'}"
    )
    drain = "never" if naive["drain"] is None else f"{naive['drain']:.1f} s"
    print(
        f"  naive:   {naive['requests']} REST requests, {naive['refused']} 503s in {NAIVE_FOR:.0f} s"
        f" (stopped; drained: {drain}), {naive['runs']} handler runs, {naive['received']} events received"
        f" ({naive['received'] - STORM_EVENTS} of them echoes of its own writes), {naive['backlog']} still queued,"
        f" {naive['latest']}/{STORM_DEALS} deals handled on their latest state"
    )
    ratio = naive["requests"] / ours["requests"] if ours["requests"] else float("inf")
    print(f"  REST requests, naive / b24pipe: {ratio:.1f}x (naive stopped after {NAIVE_FOR:.0f} s)")
    return verdict(problems(ours, naive))


def problems(ours: dict[str, Any], naive: dict[str, Any]) -> list[str]:
    """Why this run's figures mean nothing (empty: they stand)."""
    found = []
    if not ours["events_handled"] or not ours["requests"]:
        found.append(f"b24pipe handled {ours['events_handled']} events with {ours['requests']} REST requests")
    for side, answers in (("b24pipe", ours["ingress"]), ("naive", naive["ingress"])):
        if not answers.get("200"):
            found.append(f"the {side} side accepted no event")
        if non_200(answers):
            found.append(f"the {side} side answered non-200: {non_200(answers)}")
    if not naive["received"] or not naive["requests"]:
        found.append(
            f"the naive side received {naive['received']} events and made {naive['requests']} requests"
        )
    if not ours["quiet"]:
        found.append("the b24pipe side did not go quiet after the storm")
    return found


if __name__ == "__main__":
    raise SystemExit(main())
