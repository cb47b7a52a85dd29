"""`make bench-offline`: the offline lane beside the online path, in one run (issue 14).

The same storm on two standard portals (2 requests/s, burst 50), each with its own real
ingress and worker processes and namespace: BENCH_CHANGES title changes (10,000) over
BENCH_DEALS deals (1,000), made by a person and spread over 2 x BENCH_OUTAGE seconds, the
ingress killed for the last BENCH_OUTAGE seconds (30) and started again. The sample handler
(tests/storm_handlers.py) reads each deal and writes one field back.

- online: ONCRMDEALUPDATE bound to the ingress; what Bitrix24 POSTs while the ingress is down
  is lost for good (Bitrix24 never resends);
- offline: B24PIPE_OFFLINE_EVENTS=ONCRMDEALUPDATE, the doorbell to the ingress, the fallback
  poll every BENCH_POLL seconds (5); the rows wait in the portal's queue during the outage.

Printed per lane: REST requests and drain time per 1,000 changes, 503s, undelivered POSTs,
deals not handled on their latest state ("lost"), rows left in the offline queue; then the
ratios. Exits 1 when the run did no real work or the offline lane lost anything.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import redis

from b24pipe.sim.client import SimClient
from b24pipe.sim.fixture import start_simulator, stop
from shared.crypto import generate_key
from shared.keys import Keys
from shared.redisserver import start_server
from tests.offlinekit import Lane, install_lane, lane_pipeline, offline_env, storm_with_outage
from tests.stormkit import pipeline_env, runs


def _knob(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name} must be a number, not {raw!r}") from None


def run_lane(
    simulator: SimClient, redis_url: str, lane: Lane, deals: int, outage: float, poll: float
) -> Lane:
    namespace = f"benchoffline-{lane.name}"
    base = {"REDIS_URL": redis_url, "B24PIPE_NAMESPACE": namespace, "B24PIPE_TOKEN_KEYS": generate_key()}
    env = pipeline_env({**os.environ, **base}, simulator)
    offline = lane.name == "offline"
    if offline:
        env = offline_env(env, poll)
    r, keys = redis.Redis.from_url(redis_url), Keys(namespace)
    with lane_pipeline(env) as (ingress, url):
        member_id, ids = install_lane(simulator, r, keys, env, url, deals, offline)
        storm_with_outage(simulator, r, keys, ingress, member_id, lane, ids, outage, timeout=900)
        lane.sources = lane.sources or ["none"]
        handled = len(runs(r, keys))
    r.close()
    if handled == 0:
        lane.sources = []
    return lane


def main() -> int:
    changes, deals = int(_knob("BENCH_CHANGES", 10_000)), int(_knob("BENCH_DEALS", 1000))
    outage, poll = _knob("BENCH_OUTAGE", 30.0), _knob("BENCH_POLL", 5.0)
    if changes < 1 or deals < 1 or outage < 0 or poll <= 0:
        raise SystemExit("BENCH_CHANGES and BENCH_DEALS must be >= 1, BENCH_OUTAGE >= 0, BENCH_POLL > 0")
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "redis")
        process, simulator = start_simulator(Path(tmp) / "simulator.log")
        try:
            online = run_lane(simulator, server.url, Lane("online", changes), deals, outage, poll)
            offline = run_lane(simulator, server.url, Lane("offline", changes), deals, outage, poll)
        finally:
            stop(process)
            server.stop()
    print(
        f"offline bench: {changes} ONCRMDEALUPDATE over {deals} deals, one standard portal per lane"
        f" (2/s, burst 50), ingress down for the last {outage:g} s of a {max(2.0, 2 * outage):g} s storm"
    )
    for lane in (online, offline):
        print(
            f"  {lane.name:8s} {lane.per_thousand(lane.requests):7.1f} REST requests per 1,000 changes,"
            f" drain {lane.per_thousand(lane.drain):6.2f} s per 1,000 changes ({lane.drain:.1f} s),"
            f" {lane.refused} 503s, {lane.undelivered} POSTs undelivered, lost {lane.lost}/{deals} deals"
            f" (latest state never handled), {lane.rows_left} rows left in the offline queue,"
            f" {lane.doorbells} doorbells"
        )
    ratio = online.requests / offline.requests if offline.requests else float("inf")
    # online, a change is lost when its POST failed (Bitrix24 never resends); offline, when
    # its row never reached a handler (a deal not handled on its latest state, a row left)
    lost_online, lost_offline = online.undelivered, offline.lost + offline.rows_left
    print(
        f"  REST requests, online / offline: {ratio:.2f}x;"
        f" lost changes after the {outage:g} s outage: online {lost_online}, offline {lost_offline}"
    )
    problems = []
    if not online.sources or not offline.sources:
        problems.append("a lane handled nothing")
    if lost_offline:
        problems.append("the offline lane lost changes or left rows")
    if online.refused or offline.refused:
        problems.append("QUERY_LIMIT_EXCEEDED despite the shared limiter")
    print(f"  verdict: {'; '.join(problems) if problems else 'OK'}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
