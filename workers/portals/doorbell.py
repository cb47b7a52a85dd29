"""What starts a drain of a portal's offline queue (`workers.portals.offline.drain`): the doorbell
and the fallback poll.

`ring` queues a drain unless one is already queued (`Keys.offline_queued`, deleted by the
drain when it takes the portal's lock), so a portal has at most one drain running and one
waiting, however often ONOFFLINEEVENT rings. `poll`, run by every worker's heartbeat, lets
one worker per step (a lock held POLL_STEP seconds, never released, as the keep-alive's)
ring the portals whose poll is due (`Keys.offline_due`), each at its own phase of
`B24PIPE_OFFLINE_POLL`, so polls spread over the interval; a finished drain moves the
portal's next poll one interval on.
"""

from __future__ import annotations

import time
import zlib

import redis
from rq import Queue

from shared.events import Event
from shared.jobs import DRAIN_OFFLINE
from shared.keys import Keys
from shared.portals import as_text
from shared.settings import Settings
from workers.runner import context

POLL_STEP = 1.0  # seconds one worker's poll pass holds the poll lock
POLL_MAX = 1000  # portals rung per poll step at most


def schedule(client: redis.Redis, keys: Keys, settings: Settings, member_id: str, now: float) -> None:
    """Put a portal on the poll schedule (if not already there) at its own phase of the poll
    interval, so portals' polls spread over it instead of coming together."""
    phase = (zlib.crc32(member_id.encode()) % 1000) / 1000 * settings.offline_poll
    client.zadd(keys.offline_due, {member_id: now + phase}, nx=True)


def ring(client: redis.Redis, keys: Keys, settings: Settings, member_id: str) -> bool:
    """Queue a drain of the portal unless one is queued already (the debounce). True when queued."""
    if not client.set(keys.offline_queued(member_id), "1", nx=True, ex=settings.job_timeout + 60):
        return False
    Queue(keys.lifecycle_queue, connection=client).enqueue(
        DRAIN_OFFLINE, member_id, description=f"offline drain ({member_id})", job_timeout=settings.job_timeout
    )
    return True


def answer(event: Event) -> str:
    """ONOFFLINEEVENT arrived (run by `run_event`): ring, and keep the portal on the poll."""
    job = context.current()
    if not job.settings.offline_events:
        return "offline events not configured"
    schedule(job.redis, job.keys, job.settings, event.member_id, time.time())
    return (
        "drain queued" if ring(job.redis, job.keys, job.settings, event.member_id) else "drain already queued"
    )


def poll(settings: Settings, client: redis.Redis, now: float | None = None) -> list[str]:
    """One poll step if it is this process's turn: ring every portal whose poll is due and
    move it one interval on. Returns the member ids rung."""
    if not settings.offline_events:
        return []
    keys = Keys(settings.namespace)
    # Never released: its expiry spaces the steps, whichever worker's heartbeat comes first.
    if not client.set(keys.offline_poll_lock, "1", nx=True, px=int(POLL_STEP * 1000)):
        return []
    moment = time.time() if now is None else now
    found = client.zrangebyscore(keys.offline_due, "-inf", moment, start=0, num=POLL_MAX)
    due = [as_text(m) for m in found if isinstance(m, bytes | str)]
    if due:
        client.zadd(keys.offline_due, {member: moment + settings.offline_poll for member in due})
    return [member for member in due if ring(client, keys, settings, member)]
