"""Helpers for the offline-lane tests and `make bench-offline`: a simulated portal whose
ONCRMDEALUPDATE is bound offline by b24pipe's own binding code, and the queue's state."""

from __future__ import annotations

import os
from typing import Any

import redis

from b24pipe.sim.client import SimClient
from shared.keys import Keys
from shared.settings import load_settings

EVENT = "ONCRMDEALUPDATE"


def offline_env(env: dict[str, str], poll: float = 1.0) -> dict[str, str]:
    """`env` with ONCRMDEALUPDATE taken through the offline queue, polled every `poll` s."""
    return {**env, "B24PIPE_OFFLINE_EVENTS": EVENT, "B24PIPE_OFFLINE_POLL": str(poll)}


def bind_offline(env: dict[str, str], member_id: str) -> str:
    """Run b24pipe's binding reconciliation for the portal in this process, as `portals
    bind` does; returns the portal's auth_connector."""
    os.environ.update(env)
    from workers.binding import bind_portal
    from workers.offline import ensure_connector

    settings = load_settings()
    plan = bind_portal(settings, member_id, [EVENT])
    assert plan is not None, "B24PIPE_PUBLIC_URL must be set"
    return ensure_connector(settings, member_id)


def queue_rows(simulator: SimClient, member_id: str) -> int:
    """Rows in the portal's offline queue (reserved and errored ones included)."""
    return int(simulator.stats(member_id)["offline_queue"])


def stored_batches(r: redis.Redis, keys: Keys, member_id: str) -> dict[Any, Any]:
    return dict(r.hgetall(keys.offline_batches(member_id)))
