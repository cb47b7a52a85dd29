"""Helpers for the offline-lane tests and `make bench-offline`: a simulated portal whose
ONCRMDEALUPDATE is bound offline by b24pipe's own binding code, and the queue's state."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from b24pipe.redisserver import free_port
from b24pipe.sim.client import SimClient
from b24pipe.testing.storms import (
    INSTALLER,
    PERSON,
    QUIET,
    final_titles,
    handled,
    idle,
    runs,
    storm_changes,
    wait_until,
)
from shared.keys import Keys
from shared.settings import load_settings

EVENT = "ONCRMDEALUPDATE"


def offline_env(env: dict[str, str], poll: float = 1.0) -> dict[str, str]:
    """`env` with ONCRMDEALUPDATE taken through the offline queue, polled every `poll` s."""
    return {**env, "B24PIPE_OFFLINE_EVENTS": EVENT, "B24PIPE_OFFLINE_POLL": str(poll)}


def bind_offline(env: dict[str, str], member_id: str) -> str:
    """Run b24pipe's binding reconciliation for the portal in this process, as `portals
    bind` does; returns the portal's auth_connector."""
    from workers.portals.binding import bind_portal
    from workers.portals.offline import ensure_connector

    settings = load_settings(**{k: v for k, v in env.items() if k.startswith(("B24", "REDIS_URL"))})
    plan = bind_portal(settings, member_id, [EVENT])
    assert plan is not None, "B24PIPE_PUBLIC_URL must be set"
    return ensure_connector(settings, member_id)


def queue_rows(simulator: SimClient, member_id: str) -> int:
    """Rows in the portal's offline queue (reserved and errored ones included)."""
    return int(simulator.stats(member_id)["offline_queue"])


def stored_batches(r: redis.Redis, keys: Keys, member_id: str) -> dict[Any, Any]:
    return dict(r.hgetall(keys.offline_batches(member_id)))


# --- the storm with an ingress outage (tests/workers/portals/test_offline_storm.py, `make bench-offline`) ---


@dataclass
class Lane:
    """One side of the comparison: its figures after the storm settled."""

    name: str
    changes: int
    requests: int = 0  # REST requests the portal saw from the storm's start until settled
    refused: int = 0  # 503 QUERY_LIMIT_EXCEEDED among them
    drain: float = 0.0  # seconds from the storm's start until settled
    lost: int = 0  # objects never handled on their latest state
    undelivered: int = 0  # event POSTs Bitrix24 could not deliver (the outage)
    rows_left: int = 0  # rows left in the portal's offline queue (write-backs would show here)
    doorbells: int = 0  # ONOFFLINEEVENT delivered
    during_outage: int = 0  # changes made while the ingress was down
    answers: dict[str, int] = field(default_factory=dict)  # what the ingress answered, by status
    sources: list[str] = field(default_factory=list)

    def per_thousand(self, value: float) -> float:
        return value * 1000 / self.changes if self.changes else 0.0


class Ingress:
    """`b24pipe ingress` on a fixed port that can be killed and started again (the outage)."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port = env, port
        self.stack = contextlib.ExitStack()

    def start(self) -> None:
        from b24pipe.testing.ingress import ingress_process

        self.stack.enter_context(ingress_process(self.env, self.port))

    def kill(self) -> None:
        self.stack.close()  # SIGKILL: down at once
        self.stack = contextlib.ExitStack()


@contextlib.contextmanager
def lane_pipeline(env: dict[str, str], metrics_port: int | None = None) -> Iterator[tuple[Ingress, str]]:
    """An ingress (restartable) and `b24pipe worker --concurrency 2` (metrics on
    `metrics_port` and the next port, when given); yields the ingress and its URL."""
    from b24pipe.testing.workers import start_worker, stop

    ingress = Ingress(env, free_port())
    ingress.start()
    metrics = () if metrics_port is None else ("--metrics-port", str(metrics_port))
    workers = start_worker(env, "--concurrency", "2", *metrics)
    try:
        yield ingress, f"http://127.0.0.1:{ingress.port}"
    finally:
        stop(workers)
        if workers.stderr is not None:
            workers.stderr.close()
        ingress.kill()


def install_lane(
    simulator: SimClient, r: redis.Redis, keys: Keys, env: dict[str, str], url: str, deals: int, offline: bool
) -> tuple[str, list[int]]:
    """A standard portal with the app installed through the ingress; ONCRMDEALUPDATE bound
    online, or offline by b24pipe's binding code (the doorbell to the ingress); `deals` deals."""
    portal = simulator.create_portal(plan="standard")
    simulator.install(
        portal.member_id,
        handler_url=f"{url}/b24/events",
        user_id=INSTALLER,
        bind_events=[] if offline else [EVENT],
    )
    wait_until(lambda: r.hget(keys.portal(portal.member_id), "status") == b"active", 60, "the install")
    if offline:
        bind_offline({**env, "B24PIPE_PUBLIC_URL": url}, portal.member_id)
    ids: list[int] = []
    while len(ids) < deals:
        chunk = [{"action": "add", "fields": {"TITLE": "new"}}] * min(500, deals - len(ids))
        ids += [int(i) for i in simulator.apply_changes(portal.member_id, chunk, user_id=PERSON)["ids"]]
    return portal.member_id, ids


def storm_with_outage(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    ingress: Ingress,
    member_id: str,
    lane: Lane,
    ids: list[int],
    outage: float,
    timeout: float,
    tag: str = "",
) -> Lane:
    """`lane.changes` title changes spread over 2 x `outage` seconds (at least 2 s), the
    ingress down for the last `outage` seconds of it; then wait until every deal is handled
    on its latest state and the portal's offline queue is empty, or until nothing moves any
    more (what the online lane lost stays lost). `tag` makes this storm's titles differ from
    an earlier storm's on the same deals."""
    changes = [
        {**c, "fields": {"TITLE": c["fields"]["TITLE"] + tag}} for c in storm_changes(ids, lane.changes)
    ]
    latest = final_titles(changes)
    span = max(2.0, 2 * outage)
    steps = max(1, min(len(changes), int(span / 0.25)))
    before = simulator.stats(member_id)
    started = time.monotonic()
    down = False
    for step in range(steps):
        at = step * span / steps
        time.sleep(max(0.0, started + at - time.monotonic()))
        if outage > 0 and not down and at >= span - outage:
            ingress.kill()
            down = True
        part = changes[step * len(changes) // steps : (step + 1) * len(changes) // steps]
        applied = simulator.apply_changes(member_id, part, user_id=PERSON, concurrency=16)
        lane.during_outage += len(part) if down else 0
        for status, count in applied["statuses"].items():
            lane.answers[str(status)] = lane.answers.get(str(status), 0) + int(count)
    time.sleep(max(0.0, started + span - time.monotonic()))
    if down:
        ingress.start()

    def settled() -> bool:
        # the queue too: a handler may read a deal's latest state while the row of that
        # change still waits at Bitrix24 (its doorbell swallowed by the throttle) for the poll
        return handled(r, keys) == latest and idle(r, keys) and queue_rows(simulator, member_id) == 0

    deadline = time.monotonic() + timeout
    last, still_since = None, time.monotonic()
    while not settled() and time.monotonic() < deadline:
        now_seen = (len(runs(r, keys)), idle(r, keys), queue_rows(simulator, member_id))
        if now_seen != last:
            last, still_since = now_seen, time.monotonic()
        elif time.monotonic() - still_since > QUIET and now_seen[1] and now_seen[2] == 0:
            break  # idle, nothing left at Bitrix24, nothing ran for QUIET seconds: settled
        time.sleep(0.2)
    lane.drain = time.monotonic() - started
    simulator.wait_events(member_id)
    after = simulator.stats(member_id)
    seen = handled(r, keys)
    lane.lost = sum(1 for deal, title in latest.items() if seen.get(deal) != title)
    lane.requests = after["requests_total"] - before["requests_total"]
    lane.refused = after["query_limit_exceeded"] - before["query_limit_exceeded"]
    lane.undelivered = after["events_failed"] - before["events_failed"]
    lane.rows_left = int(after["offline_queue"])
    lane.doorbells = sum(
        1 for d in simulator.deliveries(member_id) if d["event"] == "ONOFFLINEEVENT" and d["ok"]
    )
    lane.sources = sorted({source for run in runs(r, keys) for source in run.get("sources", [])})
    return lane
