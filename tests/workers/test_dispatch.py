"""`run_event` on an ONAPPUNINSTALL whose job runs again: the uninstall confirmation chain
starts once per event, not once per run. Run in-process with the real worker context,
Redis and the simulator (its authorization server down, so each confirmation that starts
schedules its own follow-up job: one scheduled job per chain)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from rq import Queue
from rq.registry import ScheduledJobRegistry

from b24pipe.sim.client import SimClient
from shared.events import Event
from shared.jobs import CONFIRM_UNINSTALL
from shared.keys import Keys
from shared.settings import load_settings
from tests.support.clientkit import install
from workers import dispatch, handlers
from workers.errors import Retry
from workers.runner import context
from workers.runner.outcome import Action, JobOutcome


@pytest.fixture
def flaky_uninstall_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """An ONAPPUNINSTALL handler that fails its first attempt; the attempts it saw."""
    seen: list[int] = []
    monkeypatch.setattr(handlers, "_by_event", {})  # this test's handler only, gone after it

    @handlers.handler("ONAPPUNINSTALL")
    def on_uninstall(event: Event, b24: Any) -> None:
        seen.append(event.attempt)
        if event.attempt == 1:
            raise Retry(1.0)

    yield seen


def _confirmations(r: redis.Redis, keys: Keys) -> list[str]:
    registry = ScheduledJobRegistry(queue=Queue(keys.lifecycle_queue, connection=r))
    jobs = [registry.job_class.fetch(job_id, connection=r) for job_id in registry.get_job_ids()]
    return [job.func_name for job in jobs if job.func_name == CONFIRM_UNINSTALL]


def test_a_retried_uninstall_job_starts_one_confirmation_chain(
    simulator: SimClient,
    r: redis.Redis,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    flaky_uninstall_handler: list[int],
) -> None:
    _, member = install(simulator, r, env)
    simulator.faults(member, oauth_down=True)  # the check cannot tell: it schedules a retry
    settings = load_settings()
    keys = Keys(settings.namespace)
    event = {"id": "u-retried", "name": "ONAPPUNINSTALL", "member_id": member, "data": {}}
    job = context.JobContext(r, keys, settings, runs=1)
    monkeypatch.setattr(context, "_current", job)
    with pytest.raises(JobOutcome) as again:
        dispatch.run_event(event)
    assert again.value.outcome.action is Action.RETRY
    assert len(_confirmations(r, keys)) == 1
    job.runs = 2  # the job runs again for its failed handler
    assert dispatch.run_event(event) == "ok"
    assert flaky_uninstall_handler == [1, 2]
    assert len(_confirmations(r, keys)) == 1  # the first run's chain is the only one
