"""The queues' state read from Redis in one atomic script call (`shared/lua/queue_stats.lua`),
and the Prometheus gauges made from it.

Both the ingress and every worker expose these gauges at scrape time, so they do not go
silent when every worker is dead (that is exactly when the queue-late and workers-down
alerts must fire); aggregate them with max(), never sum(). `b24pipe_queue_backlog` is what
an autoscaler (KEDA) should scale workers on: jobs waiting, plus those taken by workers and
not finished, plus those scheduled for later (retries, deferrals, coalescing delays).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared import lua, rqkeys
from shared.keys import Keys

QUEUE_STATS = "shared/lua/queue_stats.lua"
DEAD_FACTOR = 0.75  # a worker silent for this share of B24PIPE_RECOVERY_AFTER counts as dead


@dataclass(frozen=True, slots=True)
class QueueState:
    queue: str
    waiting: int
    in_flight: int
    scheduled: int
    oldest_enqueued_at: float | None

    @property
    def backlog(self) -> int:
        return self.waiting + self.in_flight + self.scheduled

    def oldest_age(self, now: float) -> float:
        if self.oldest_enqueued_at is None:
            return 0.0
        return max(0.0, now - self.oldest_enqueued_at)


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: float
    workers_alive: int
    queues: tuple[QueueState, ...]

    @property
    def backlog(self) -> int:
        return sum(state.backlog for state in self.queues)


def parse_rq_time(text: str) -> float:
    """Unix time of an RQ timestamp ('2024-01-02T03:04:05.123456Z')."""
    return datetime.fromisoformat(text).timestamp()


def _args(keys: Keys, recovery_after: float, now: float) -> tuple[list[str], list[str | float]]:
    return [keys.workers], [now, recovery_after * DEAD_FACTOR, rqkeys.LUA_ARG, *keys.queues]


def parse(queues: Sequence[str], row: Sequence[int | bytes | str], now: float) -> Snapshot:
    """The script's flat answer as a Snapshot (pure)."""
    states = []
    for index, name in enumerate(queues):
        waiting, in_flight, scheduled, stamp = row[1 + 4 * index : 5 + 4 * index]
        text = stamp.decode() if isinstance(stamp, bytes) else str(stamp)
        states.append(
            QueueState(
                name, int(waiting), int(in_flight), int(scheduled), parse_rq_time(text) if text else None
            )
        )
    return Snapshot(taken_at=now, workers_alive=int(row[0]), queues=tuple(states))


def read(client: redis.Redis, keys: Keys, recovery_after: float) -> Snapshot:
    now = time.time()
    script_keys, args = _args(keys, recovery_after, now)
    row = lua.script(client, QUEUE_STATS)(keys=script_keys, args=args)
    return parse(keys.queues, row, now)


async def aread(client: aioredis.Redis, keys: Keys, recovery_after: float) -> Snapshot:
    now = time.time()
    script_keys, args = _args(keys, recovery_after, now)
    row = await lua.script(client, QUEUE_STATS)(keys=script_keys, args=args)
    return parse(keys.queues, row, now)


def families(snapshot: Snapshot) -> list[GaugeMetricFamily]:
    """The queue gauges of one snapshot."""
    now = snapshot.taken_at
    per_queue: tuple[tuple[str, str, Callable[[QueueState], float]], ...] = (
        ("b24pipe_queue_depth", "Jobs waiting in the queue", lambda s: s.waiting),
        ("b24pipe_queue_oldest_age_seconds", "Age of the oldest waiting job", lambda s: s.oldest_age(now)),
        ("b24pipe_queue_in_flight", "Jobs taken by workers and not finished", lambda s: s.in_flight),
        (
            "b24pipe_queue_scheduled",
            "Jobs scheduled to run later (retries, deferrals)",
            lambda s: s.scheduled,
        ),
        (
            "b24pipe_queue_backlog",
            "Jobs waiting, in flight or scheduled: what to scale workers on",
            lambda s: s.backlog,
        ),
    )
    found = []
    for name, doc, value in per_queue:
        family = GaugeMetricFamily(name, doc, labels=["queue"])
        for state in snapshot.queues:
            family.add_metric([state.queue], float(value(state)))
        found.append(family)
    alive = GaugeMetricFamily("b24pipe_workers_alive", "Workers whose heartbeat is recent")
    alive.add_metric([], float(snapshot.workers_alive))
    found.append(alive)
    return found


class _Families(Collector):
    def __init__(self, found: list[GaugeMetricFamily]) -> None:
        self.found = found

    def collect(self) -> Iterator[Metric]:
        yield from self.found


def render(snapshot: Snapshot) -> bytes:
    """The queue gauges in the Prometheus text format (appended to the ingress's /metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families(snapshot)))
    return generate_latest(registry)
