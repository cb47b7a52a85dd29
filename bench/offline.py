"""`make bench-offline`: the offline lane beside the online path, in one run (issue 14).

Two standard portals (2 requests/s, burst 50), each with its own real ingress and worker
processes and namespace, the sample handler of b24pipe/testing/storm_handlers.py (reads each deal,
writes one field back):

- online: ONCRMDEALUPDATE bound to the ingress; what Bitrix24 POSTs while the ingress is down
  is lost for good (Bitrix24 never resends);
- offline: B24PIPE_OFFLINE_EVENTS=ONCRMDEALUPDATE, the doorbell to the ingress, the fallback
  poll every BENCH_POLL seconds (5); rows wait in the portal's queue during an outage.

Each lane takes the same storm twice: BENCH_CHANGES title changes (10,000) over BENCH_DEALS
deals (1,000) by a person. The first, made within 2 s, gives REST requests and drain time
per 1,000 changes; the second is spread over 2 x BENCH_OUTAGE seconds with the ingress killed
for its last BENCH_OUTAGE seconds (30) and started again, which gives the changes each lane
lost. Exits 1 when a lane handled nothing, a storm without an outage was
not handled on every deal's latest state, the ingress answered anything but 200 to a storm
without an outage, the offline lane lost anything, or a 503 came back.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import redis

from b24pipe.redisserver import start_server
from b24pipe.sim.client import SimClient
from b24pipe.sim.fixture import start_simulator, stop
from b24pipe.testing.offline import Lane, install_lane, lane_pipeline, offline_env, storm_with_outage
from b24pipe.testing.storms import pipeline_env
from bench.knobs import knob
from shared.crypto import generate_key
from shared.keys import Keys


def run_lane(
    simulator: SimClient, redis_url: str, name: str, changes: int, deals: int, outage: float, poll: float
) -> tuple[Lane, Lane]:
    """The storm without an outage (REST requests, drain time), then again with one (losses)."""
    namespace = f"benchoffline-{name}"
    base = {"REDIS_URL": redis_url, "B24PIPE_NAMESPACE": namespace, "B24PIPE_TOKEN_KEYS": generate_key()}
    env = pipeline_env({**os.environ, **base}, simulator)
    offline = name == "offline"
    if offline:
        env = offline_env(env, poll)
    r, keys = redis.Redis.from_url(redis_url), Keys(namespace)
    clean, broken = Lane(name, changes), Lane(name, changes)
    with lane_pipeline(env) as (ingress, url):
        member_id, ids = install_lane(simulator, r, keys, env, url, deals, offline)
        storm_with_outage(simulator, r, keys, ingress, member_id, clean, ids, 0, timeout=900)
        storm_with_outage(simulator, r, keys, ingress, member_id, broken, ids, outage, 900, " again")
    r.close()
    return clean, broken


def main() -> int:
    changes, deals = knob("BENCH_CHANGES", 10_000, 1), knob("BENCH_DEALS", 1000, 1)
    outage, poll = knob("BENCH_OUTAGE", 30.0), knob("BENCH_POLL", 5.0, 0.001)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "redis")
        process, simulator = start_simulator(Path(tmp) / "simulator.log")
        try:
            online, online_out = run_lane(simulator, server.url, "online", changes, deals, outage, poll)
            offline, offline_out = run_lane(simulator, server.url, "offline", changes, deals, outage, poll)
        finally:
            stop(process)
            server.stop()
    print(
        f"offline bench: {changes} ONCRMDEALUPDATE over {deals} deals by a person, one standard portal"
        f" per lane (2/s, burst 50), made within 2 s"
    )
    for lane in (online, offline):
        print(
            f"  {lane.name:8s} {lane.per_thousand(lane.requests):6.1f} REST requests and"
            f" {lane.per_thousand(lane.drain):5.2f} s drain per 1,000 changes ({lane.requests} requests,"
            f" {lane.drain:.1f} s), {lane.refused} 503s, {lane.lost} deals not on their latest state,"
            f" {lane.rows_left} rows left, {lane.doorbells} doorbells"
        )
    ratio = offline.requests / online.requests if online.requests else float("inf")
    print(
        f"  REST requests, offline / online: {ratio:.2f}; drain time, offline / online:"
        f" {offline.drain / online.drain if online.drain else float('inf'):.2f}"
    )
    # online, a change made while the ingress is down is lost: Bitrix24 never resends its POST;
    # offline, a change is lost when its row never reached a handler
    lost_online, lost_offline = online_out.during_outage, offline_out.lost + offline_out.rows_left
    print(
        f"  the same storm again over {max(2.0, 2 * outage):g} s, the ingress down for its last {outage:g} s:"
    )
    for lane, lost in ((online_out, lost_online), (offline_out, lost_offline)):
        print(
            f"  {lane.name:8s} lost changes: {lost} ({lane.during_outage} made during the outage,"
            f" {lane.undelivered} POSTs failed, echoes of our writes included; {lane.lost}/{deals} deals"
            f" never handled on their latest state, {lane.rows_left} rows left)"
        )
    found = problems(online, offline, online_out, offline_out)
    for why in found:
        print(f"benchmark FAILED: {why}")
    print(f"  verdict: {'FAILED' if found else 'OK'}")
    return 1 if found else 0


def problems(online: Lane, offline: Lane, online_out: Lane, offline_out: Lane) -> list[str]:
    """Why the run proves nothing, or the offline lane failed its promise (pure)."""
    found = []
    if min(len(lane.sources) for lane in (online, offline, online_out, offline_out)) == 0:
        found.append("a lane handled nothing")
    if set(online.answers) != {"200"} or set(offline.answers) - {"200"}:
        found.append(f"the ingress answered {online.answers} (online), {offline.answers} (offline)")
    if online.lost or offline.lost:
        found.append("a storm without an outage was not handled on its latest state")
    if offline_out.lost or offline_out.rows_left:
        found.append("the offline lane lost changes")
    if any(lane.refused for lane in (online, offline, online_out, offline_out)):
        found.append("QUERY_LIMIT_EXCEEDED despite the shared limiter")
    return found


if __name__ == "__main__":
    raise SystemExit(main())
