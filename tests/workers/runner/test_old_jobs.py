"""Jobs the previous release queued still run after an upgrade (issue 12).

RQ stores a job's function as a dotted path in Redis, so a job queued before the layout
changed names the old modules. Here each is queued exactly as that release did, through
RQ's own `Queue.enqueue` with the old path as a string and the old arguments, plus one
event through the ingress's fast path (`shared.jobs.enqueue_event`), and a real
`b24pipe worker` process runs them against the simulator. Each must reach what its job is
for, not fail on an import: the handler ran, the bindings exist on the portal, the probe
and the offline queue were asked, the pending install was verified, and both uninstalls (a
confirmation job, and an ONAPPUNINSTALL event's job) were acted on.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from rq import Queue
from rq.job import Job, JobStatus

from b24pipe.sim.client import SimClient
from b24pipe.testing.workers import seen, stop, wait_for
from shared import portalstore as store
from shared.crypto import digest
from shared.events import Event
from shared.jobs import enqueue_event
from shared.keys import Keys
from shared.portals import Portal, Status
from shared.settings import Settings, load_settings
from tests.support.clientkit import cipher_of, client_env, install, start_logged_worker

PUBLIC_URL = "http://127.0.0.1:9"  # bindings point here; nothing needs to answer


def _old_event(name: str, member_id: str) -> dict[str, Any]:
    """An event as the previous release queued it: `Event.model_dump(mode="json")` of that
    release, written out field by field so that a change of today's model cannot hide here."""
    return {
        "id": uuid.uuid4().hex,
        "name": name,
        "member_id": member_id,
        "domain": f"{member_id}.bitrix24.test",
        "user_id": 2,
        "entity_id": None,
        "entity_type": None,
        "data": {},
        "ts": int(time.time()),
        "attempt": 1,
        "handler_id": None,
        "received_at": time.time(),
        "source": "online",
    }


def _pending_install(
    simulator: SimClient, r: redis.Redis, env: dict[str, str], keys: Keys
) -> tuple[str, str]:
    """A portal whose install was seen while the authorization server was unreachable:
    its pending record as the ingress stores it. (member id, application token digest)."""
    portal = simulator.create_portal()
    pair = simulator.install(portal.member_id)
    record = Portal(
        member_id=portal.member_id,
        domain=portal.domain,
        client_endpoint=pair.client_endpoint,
        status=Status.PENDING,
    )
    record.seal_tokens(cipher_of(env), pair.access_token, pair.refresh_token, pair.expires)
    token_digest = digest(pair.application_token)
    pending = store.PendingInstall(record, token_digest, None, False, int(time.time()))
    settings = load_settings()
    assert store.run(r, store.save_pending(keys, pending, store.Bounds.of(settings))) == 1
    return portal.member_id, token_digest


def _status(r: redis.Redis, job_id: str) -> JobStatus | None:
    return Job.fetch(job_id, connection=r).get_status()


def _status_of(r: redis.Redis, keys: Keys, member_id: str) -> Status | None:
    portal = store.run(r, store.load_portal(keys, member_id))
    return None if portal is None else portal.status


def test_jobs_queued_by_the_previous_release_run_to_their_outcome(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    settings: Settings,
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    env = client_env(
        base_env,
        simulator,
        B24PIPE_PUBLIC_URL=PUBLIC_URL,
        B24PIPE_BIND_CHECK_INTERVAL="0",
        B24PIPE_PROBE_INTERVAL="0",
    )
    env["B24PIPE_HANDLERS"] = "tests.support.worker_handlers"  # ONTESTRECORD records each run
    _, member = install(simulator, r, env)
    _, leaving = install(simulator, r, env)  # its uninstall confirmed by the job itself
    _, gone = install(simulator, r, env)  # by the ONAPPUNINSTALL event's job
    simulator.uninstall(leaving)
    simulator.uninstall(gone)
    pending_member, pending_digest = _pending_install(simulator, r, env, keys)

    events = Queue(keys.events_queue, connection=r)
    lifecycle = Queue(keys.lifecycle_queue, connection=r)
    handled = _old_event("ONTESTRECORD", member)
    fast = Event.model_validate(_old_event("ONTESTRECORD", member))
    uninstall = {**_old_event("ONAPPUNINSTALL", leaving), "data": {"CLEAN": "0"}}
    jobs = {
        "run_event": events.enqueue("workers.dispatch.run_event", handled).id,
        "reconcile": lifecycle.enqueue("workers.binding.reconcile", member, "install").id,
        "probe": lifecycle.enqueue("workers.probe.send", member).id,
        "drain": lifecycle.enqueue("workers.offline.drain", member).id,
        "reverify": lifecycle.enqueue(
            "workers.lifecycle.reverify_install", pending_member, 1, pending_digest
        ).id,
        "uninstall": lifecycle.enqueue("workers.lifecycle.confirm_uninstall", uninstall).id,
        "uninstall_event": lifecycle.enqueue(
            "workers.dispatch.run_event", {**_old_event("ONAPPUNINSTALL", gone), "data": {"CLEAN": "0"}}
        ).id,
    }
    assert enqueue_event(r, keys, settings, fast, keys.events_queue)

    workers.append(start_logged_worker(env, tmp_path / "worker.log"))
    ended = {JobStatus.FINISHED, JobStatus.FAILED}
    assert wait_for(lambda: all(_status(r, i) in ended for i in jobs.values()), timeout=60)
    statuses = {name: _status(r, i) for name, i in jobs.items()}
    assert set(statuses.values()) == {JobStatus.FINISHED}, (
        statuses,
        (tmp_path / "worker.log").read_text()[-3000:],
    )
    assert wait_for(lambda: {row[0] for row in seen(r, keys.ns, "record")} == {handled["id"], fast.id})
    assert wait_for(lambda: all(_status_of(r, keys, m) is Status.REVOKED for m in (leaving, gone)))
    stop(workers.pop())

    bound = {
        str(b["event"]) for b in simulator.stats(member)["bindings"] if b["handler"].startswith(PUBLIC_URL)
    }
    assert {"ONTESTRECORD", "ONAPPUNINSTALL", "ONAPPTEST"} <= bound
    requests = simulator.stats(member)["requests"]
    assert requests.get("event.test") == 1  # the probe was sent
    assert requests.get("event.offline.get", 0) >= 1  # the drain asked for the offline queue

    assert _status_of(r, keys, pending_member) is Status.ACTIVE  # the pending install, verified
    assert "ModuleNotFoundError" not in (tmp_path / "worker.log").read_text()
