"""Issue 6 end to end: a storm of 1,000 updates over 200 deals of one standard portal costs a
handful of REST calls and never feeds on itself. Real ingress and worker processes, real
Redis, the simulator sending an event back for every change (the app's own writes too)."""

from __future__ import annotations

import redis

from b24pipe.sim.client import SimClient
from b24pipe.testing.storms import (
    DEALS,
    EVENTS,
    INSTALLER,
    PERSON,
    comment_for,
    install,
    pipeline,
    pipeline_env,
    quiet_for,
    run_storm,
    runs,
)
from shared.keys import Keys


def test_a_storm_of_a_thousand_updates_costs_a_handful_of_rest_calls(
    simulator: SimClient, r: redis.Redis, keys: Keys, base_env: dict[str, str]
) -> None:
    with pipeline(pipeline_env(base_env, simulator)) as running:
        member_id, ids = install(simulator, r, keys, running)
        assert len(ids) == DEALS
        result = run_storm(simulator, r, keys, member_id, ids)

        # every deal handled on its latest state (run_storm waited for exactly that)
        assert result.ingress == {"200": EVENTS}  # the ingress took every event: no 503
        assert result.requests <= 20
        assert result.refused == 0  # no QUERY_LIMIT_EXCEEDED
        # no echo of our own writes was dispatched: the handler only ever saw the person
        handler_runs = runs(r, keys)
        assert {user for run in handler_runs for user in run["users"]} == {PERSON}
        writes = sum(run["writes"] for run in handler_runs)
        assert writes >= DEALS
        assert running.metric("b24pipe_echo_suppressed_total", event="ONCRMDEALUPDATE") == writes
        assert running.metric("b24pipe_loop_cut_total") == 0
        # and nothing feeds on itself afterwards
        assert quiet_for(simulator, r, keys, member_id)

    updates = [d for d in simulator.deliveries(member_id) if d["event"] == "ONCRMDEALUPDATE" and d["ok"]]
    assert len(updates) == EVENTS + writes  # the echoes did come back; they were dropped
    endpoint = f"{simulator.base_url}/p/{simulator.stats(member_id)['domain']}/rest/"
    token = simulator.user_tokens(member_id, INSTALLER)["access_token"]
    deals = []
    for start in range(0, DEALS, 50):
        page = {"select": ["ID", "TITLE", "COMMENTS"], "start": start}
        deals += simulator.rest(endpoint, "crm.deal.list", page, token=token).body["result"]
    assert len(deals) == DEALS  # what the portal holds: every deal reviewed on its final title
    assert all(deal["COMMENTS"] == comment_for(deal["TITLE"]) and " v" in deal["TITLE"] for deal in deals)
