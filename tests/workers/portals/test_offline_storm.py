"""A storm through the offline lane, end to end: real ingress (the doorbell) and worker
processes, a standard portal (2 requests/s, burst 50). Every deal is handled on its latest
state, with no 503, the portal's queue ends empty, and the handler's own write-backs (which
carry the portal's auth_connector) never come back. Sized for `make test`; the full storm
and the ingress outage are `make bench-offline`."""

from __future__ import annotations

import redis

from b24pipe.redisserver import free_port
from b24pipe.sim.client import SimClient
from b24pipe.testing.offline import Lane, install_lane, lane_pipeline, offline_env, storm_with_outage
from b24pipe.testing.storms import PERSON, Pipeline, pipeline_env, runs
from shared.keys import Keys

DEALS, CHANGES = 100, 1000


def test_a_storm_drains_through_the_offline_lane(
    simulator: SimClient, r: redis.Redis, keys: Keys, base_env: dict[str, str]
) -> None:
    # the doorbell (ONOFFLINEEVENT through the ingress) starts the drains; its throttle may
    # swallow the ring of the storm's last rows, which the fallback poll then picks up
    env = offline_env(pipeline_env(base_env, simulator), poll=5)
    port = free_port()
    with lane_pipeline(env, port) as (ingress, url):
        member_id, ids = install_lane(simulator, r, keys, env, url, DEALS, offline=True)
        lane = storm_with_outage(
            simulator, r, keys, ingress, member_id, Lane("offline", CHANGES), ids, outage=0, timeout=120
        )
        counted = Pipeline(url, [port, port + 1])
        fetched = counted.metric("b24pipe_offline_rows_total", outcome="fetched")
        assert DEALS <= fetched <= CHANGES  # the queue merged changes: one row per deal at a time
        assert counted.metric("b24pipe_offline_rows_total", outcome="queued") == fetched
        assert counted.metric("b24pipe_offline_rows_total", outcome="cleared") == fetched
        assert counted.metric("b24pipe_offline_rows_total", outcome="errored") == 0
        assert counted.metric("b24pipe_offline_drains_total", result="ok") >= 1
    assert lane.lost == 0 and lane.rows_left == 0 and lane.refused == 0
    assert lane.undelivered == 0 and lane.doorbells >= 1
    assert lane.sources == ["offline"]
    handler_runs = runs(r, keys)
    assert {user for run in handler_runs for user in run["users"]} == {PERSON}  # no write-back came back
    assert sum(run["writes"] for run in handler_runs) >= DEALS
    # the offline queue keeps one row per deal: far fewer REST calls than changes
    assert lane.requests < CHANGES / 10
