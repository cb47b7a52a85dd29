"""The event storm, shared by tests/workers/guards/test_storm_e2e.py and `make bench-storm`: the real pipeline
(an ingress process, worker processes, Redis) against the Bitrix24 simulator, a standard
portal (2 requests/s, burst 50) with the app installed through the real install path, 200
deals, and 1,000 ONCRMDEALUPDATE caused by a person, delivered as fast as the ingress takes
them. The simulator sends an event back for every change, the app's own writes included.

The sample handler (b24pipe/testing/storm_handlers.py) writes `COMMENTS = comment_for(TITLE)` on each
deal; every storm change gives a deal a new title, so "handled on its latest state" means
the handler read each deal's final title.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from prometheus_client.parser import text_string_to_metric_families

from b24pipe.redisserver import free_port, free_ports
from b24pipe.sim.client import SimClient
from shared import rqkeys
from shared.keys import Keys

RUNS = "storm:runs"
"""Redis list (under the namespace) where the sample handler records each run."""

DEALS, EVENTS = 200, 1000
INSTALLER, PERSON = 1, 2  # the admin who installs the app (our writes), the person storming
QUIET = 10.0  # seconds without an event or a request that count as "quiet afterwards"
WORKER_PROCESSES = 2


def comment_for(title: str) -> str:
    return f"reviewed {title}"


def storm_changes(ids: list[int], events: int = EVENTS) -> list[dict[str, Any]]:
    """`events` title changes spread over the deals, each deal's last one known in advance."""
    return [
        {"id": ids[i % len(ids)], "fields": {"TITLE": f"deal {ids[i % len(ids)]} v{i}"}}
        for i in range(events)
    ]


def final_titles(changes: list[dict[str, Any]]) -> dict[str, str]:
    return {str(change["id"]): change["fields"]["TITLE"] for change in changes}


def pipeline_env(base: dict[str, str], simulator: SimClient) -> dict[str, str]:
    """The environment of the storm's ingress and workers (base: REDIS_URL, namespace, keys...)."""
    from b24pipe.testing.workers import worker_env

    return worker_env(
        base,
        B24_OAUTH_URL=simulator.base_url,
        B24_CLIENT_ID=simulator.client_id,
        B24_CLIENT_SECRET=simulator.client_secret,
        B24PIPE_ALLOW_HTTP="1",
        B24PIPE_ALLOWED_HOSTS="127.0.0.1,localhost",
        B24PIPE_HANDLERS="b24pipe.testing.storm_handlers",
        B24PIPE_RECOVERY_AFTER="60",
    )


@dataclass
class Pipeline:
    """The running pipeline: its ingress URL and its workers' metrics ports."""

    url: str
    metrics_ports: list[int]

    def metric(self, name: str, **labels: str) -> float:
        """A counter summed over every worker process (0 when no process has it yet)."""
        total = 0.0
        for port in self.metrics_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                text = answer.read().decode()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                        total += sample.value
        return total


@contextlib.contextmanager
def pipeline(env: dict[str, str]) -> Iterator[Pipeline]:
    """`b24pipe ingress` and `b24pipe worker --concurrency 2` as real processes."""
    from b24pipe.testing.ingress import ingress_process
    from b24pipe.testing.workers import start_worker, stop

    port, metrics = free_port(), free_ports(WORKER_PROCESSES)
    with ingress_process(env, port):
        workers = start_worker(env, "--concurrency", str(WORKER_PROCESSES), "--metrics-port", str(metrics))
        try:
            ports = [metrics + i for i in range(WORKER_PROCESSES)]
            running = Pipeline(f"http://127.0.0.1:{port}", ports)
            wait_until(lambda: _answers(running) or workers.poll() is not None, 60, "the workers' metrics")
            if workers.poll() is not None:
                raise AssertionError(f"the workers exited ({workers.returncode}): {_stderr(workers)}")
            yield running
        finally:
            stop(workers)
            if workers.stderr is not None:
                workers.stderr.close()


def _stderr(process: subprocess.Popen[bytes]) -> str:
    return process.stderr.read().decode(errors="replace")[-2000:] if process.stderr is not None else ""


def _answers(running: Pipeline) -> bool:
    try:
        running.metric("b24pipe_worker_jobs_in_progress")
    except OSError:
        return False
    return True


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds it took; raises naming `what` past the (generous) safety bound."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def install(
    simulator: SimClient, r: redis.Redis, keys: Keys, running: Pipeline, deals: int = DEALS
) -> tuple[str, list[int]]:
    """A standard portal, the app installed through the ingress (verified with the simulated
    authorization server), ONCRMDEALUPDATE bound to it, and `deals` deals made by the person."""
    portal = simulator.create_portal(plan="standard")
    simulator.install(
        portal.member_id,
        handler_url=f"{running.url}/b24/events",
        user_id=INSTALLER,
        bind_events=["ONCRMDEALUPDATE"],
    )
    record = keys.portal(portal.member_id)
    wait_until(lambda: r.hget(record, "status") == b"active", 60, "the install to be verified")
    added = simulator.apply_changes(
        portal.member_id, [{"action": "add", "fields": {"TITLE": "new"}}] * deals, user_id=PERSON
    )
    return portal.member_id, [int(i) for i in added["ids"]]


def runs(r: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in r.lrange(f"{keys.ns}:{RUNS}", 0, -1)]


def handled(r: redis.Redis, keys: Keys) -> dict[str, str]:
    """Deal id -> the title the handler last read it with."""
    seen: dict[str, str] = {}
    for run in runs(r, keys):
        seen.update(run["seen"])
    return seen


def idle(r: redis.Redis, keys: Keys) -> bool:
    """Nothing queued, scheduled or running in the pipeline's queues."""
    with r.pipeline(transaction=False) as pipe:
        for queue in keys.queues:
            pipe.llen(rqkeys.queue(queue))
            pipe.zcard(rqkeys.scheduled(queue))
            pipe.zcard(rqkeys.started(queue))
        return not any(pipe.execute())


@dataclass
class StormResult:
    requests: int  # REST requests the portal saw during the storm
    refused: int  # 503 QUERY_LIMIT_EXCEEDED among them
    drain: float  # seconds from the first change until every deal is handled and the echoes dropped
    ingress: dict[str, int]  # what the ingress answered the storm's deliveries, by status
    before: dict[str, Any]  # the portal's statistics right before the storm


def run_storm(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    member_id: str,
    ids: list[int],
    timeout: float = 240,
    events: int = EVENTS,
) -> StormResult:
    """Send the storm, wait until every deal was handled on its latest state and the queues
    are idle; the portal's REST figures for the storm alone."""
    changes = storm_changes(ids, events)
    latest = final_titles(changes)
    before = simulator.stats(member_id)
    started = time.monotonic()
    answer = simulator.apply_changes(member_id, changes, user_id=PERSON, concurrency=16)
    wait_until(lambda: handled(r, keys) == latest, timeout, "every deal handled on its latest state")
    simulator.wait_events(member_id)  # the echoes of our writes, delivered ...
    wait_until(lambda: idle(r, keys), timeout, "the queues to drain")  # ... and dropped
    drain = time.monotonic() - started
    after = simulator.stats(member_id)
    return StormResult(
        requests=after["requests_total"] - before["requests_total"],
        refused=after["query_limit_exceeded"] - before["query_limit_exceeded"],
        drain=drain,
        ingress={str(k): int(v) for k, v in answer["statuses"].items()},
        before=before,
    )


def quiet_for(
    simulator: SimClient, r: redis.Redis, keys: Keys, member_id: str, seconds: float = QUIET
) -> bool:
    """True when, for `seconds`, the portal sent no event and got no request and no job ran.
    Watched all along (every 0.25 s): the first sign of activity answers False at once."""
    before, ran = simulator.stats(member_id), len(runs(r, keys))
    deadline = time.monotonic() + seconds
    while True:
        after = simulator.stats(member_id)
        if not (
            after["events_sent"] + after["events_failed"] == before["events_sent"] + before["events_failed"]
            and after["requests_total"] == before["requests_total"]
            and len(runs(r, keys)) == ran
            and idle(r, keys)
        ):
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.25)
