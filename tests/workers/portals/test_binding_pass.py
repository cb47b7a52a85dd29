"""The reconciliation and its periodic passes, against a real Redis and the simulator:
one pass per interval whoever asks, one job per portal spread across the interval, one
`event.get` per portal when nothing changed, one reconciliation per portal at a time,
transient errors left to the worker's retry, and a failure that leaves a portal counted
as missing bindings."""

from __future__ import annotations

import pytest
import redis
from rq import Queue
from rq.registry import ScheduledJobRegistry

from b24pipe.sim.client import SimClient
from bench.limiter import seed
from shared.jobs import RECONCILE_BINDINGS, SEND_PROBE
from shared.keys import Keys
from shared.settings import load_settings
from tests.support.clientkit import cipher_of, cli, install
from workers.errors import ApiError
from workers.portals import binding, probe
from workers.runner.outcome import Reschedule


def test_one_pass_per_interval_spread_across_portals(r: redis.Redis, keys: Keys, env: dict[str, str]) -> None:
    members = [f"m{i}" for i in range(4)]
    r.sadd(keys.portals, *members)
    settings = load_settings(public_url="http://127.0.0.1:9", bind_check_interval=600, probe_interval=600)
    assert binding.periodic(settings, r) == 4
    assert binding.periodic(settings, r) == 0  # another worker asking in the same interval
    assert probe.periodic(settings, r) == 4 and probe.periodic(settings, r) == 0
    queue = Queue(keys.lifecycle_queue, connection=r)
    registry = ScheduledJobRegistry(keys.lifecycle_queue, connection=r)
    jobs = [queue.fetch_job(i) for i in [*queue.job_ids, *registry.get_job_ids()]]
    for name in (RECONCILE_BINDINGS, SEND_PROBE):
        assert sorted(job.args[0] for job in jobs if job and job.func_name == name) == members
    times = sorted(registry.get_scheduled_time(i).timestamp() for i in registry.get_job_ids())
    assert times[-1] - times[0] >= 300  # spread across the interval, not all at its top
    off = load_settings(public_url="http://127.0.0.1:9", bind_check_interval=0, probe_interval=0)
    r.delete(keys.bind_check_lock, keys.probe_lock)
    assert binding.periodic(off, r) == 0 and probe.periodic(off, r) == 0
    unbound = load_settings(bind_check_interval=600, probe_interval=600)  # no B24PIPE_PUBLIC_URL
    assert binding.periodic(unbound, r) == 0 and probe.periodic(unbound, r) == 0


def test_reconciliation_costs_one_event_get_when_nothing_changed(
    simulator: SimClient, r: redis.Redis, keys: Keys, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("B24PIPE_PUBLIC_URL", "http://127.0.0.1:9")
    _, member = install(simulator, r, env)
    assert binding.reconcile(member, "test") == "changed"
    before = simulator.stats(member)["requests"]
    assert binding.reconcile(member, "test") == "unchanged"
    after = simulator.stats(member)["requests"]
    assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == {"event.get": 1}
    assert r.hget(keys.bind_state(member), "outcome") == b"unchanged"

    # one at a time: another reconciliation holds the portal's lock
    r.set(keys.bind_lock(member), "someone")
    with pytest.raises(Reschedule):
        binding.reconcile(member, "test")
    r.delete(keys.bind_lock(member))

    # a transient error is the worker's to retry; the lock is released
    simulator.faults(member, rest_500=10)
    with pytest.raises(ApiError):
        binding.reconcile(member, "test")
    assert not r.exists(keys.bind_lock(member))
    simulator.faults(member, rest_500=0)

    # a refusal is recorded: the portal counts as missing bindings until a reconciliation works
    portal = simulator.create_portal()
    pair = simulator.install(portal.member_id, user_id=2)  # a token of a user who is not an admin
    seed(
        r,
        keys.ns,
        cipher_of(env),
        {**pair.__dict__, "member_id": portal.member_id, "domain": portal.domain},
        "standard",
    )
    assert binding.reconcile(portal.member_id, "test") == "failed"
    assert r.smembers(keys.bindings_missing) == {portal.member_id.encode()}
    assert b"ACCESS_DENIED" in (r.hget(keys.bind_state(portal.member_id), "error") or b"")


def test_portals_add_with_oauth_tokens_schedules_a_reconciliation(
    r: redis.Redis, keys: Keys, base_env: dict[str, str]
) -> None:
    secrets = '{"application_token": "apptoken0123456789", "access_token": "access-0123456789"}'
    added = cli(
        base_env,
        "portals",
        "add",
        "--member-id",
        "m1",
        "--domain",
        "m1.example.com",
        "--secrets-file",
        "-",
        stdin=secrets,
    )
    assert added.returncode == 0, added.stderr
    queue = Queue(keys.lifecycle_queue, connection=r)
    assert [(job.func_name, job.args[0]) for job in queue.jobs] == [(RECONCILE_BINDINGS, "m1")]
    hooked = cli(
        base_env,
        "portals",
        "add",
        "--member-id",
        "m2",
        "--domain",
        "m2.example.com",
        "--secrets-file",
        "-",
        stdin='{"application_token": "apptoken0123456789"}',
    )
    assert hooked.returncode == 0 and len(queue.jobs) == 1  # no OAuth token: nothing to bind with
