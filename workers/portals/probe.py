"""The delivery probe: is Bitrix24 still sending this portal's events to us?

A portal that stopped sending events (bindings gone, install not finished, payment expired)
looks exactly like a quiet one. So every `B24PIPE_PROBE_INTERVAL` one worker schedules a
`send` job per portal, spread across the interval: it calls `event.test` with a fresh
marker, which Bitrix24 answers with an ONAPPTEST through its queue server (bound on every
portal, `workers.portals.binding.ALWAYS_BOUND`). The ingress records its arrival and latency
(`shared.probe`, `b24pipe_probe_latency_seconds`). A marker still in flight when the next
probe is due never arrived: `b24pipe_probe_missing_total` counts it and the portal's probe
state says "missing" until a probe arrives again (`portals doctor` reads it).
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import timedelta

import redis
from prometheus_client import Counter
from rq import Queue

from shared import portalstore as store
from shared.jobs import SEND_PROBE
from shared.keys import Keys
from shared.logs import log
from shared.portals import Status, as_text
from shared.probe import MARKER
from shared.settings import Settings
from workers.errors import AuthRevoked, B24Error, OperatingLimit, RateLimited, ReauthRequired
from workers.portals.binding import active_members, claim_pass, handler_url, spread
from workers.rest.client import client_for
from workers.runner.outcome import Defer

_log = logging.getLogger("b24pipe.probe")

PROBES_MISSING = Counter("b24pipe_probe_missing", "Delivery probes whose ONAPPTEST never arrived")


def periodic(settings: Settings, client: redis.Redis) -> int:
    """One probe pass if it is this process's turn: a `send` job per portal, spread across
    the interval. Returns the number of jobs scheduled."""
    keys = Keys(settings.namespace)
    if handler_url(settings) is None:  # nothing is bound, so no probe could ever arrive
        return 0
    if not claim_pass(client, keys.probe_lock, settings.probe_interval):
        return 0
    queue = Queue(keys.lifecycle_queue, connection=client)
    delays = spread(active_members(client, keys), settings.probe_interval)
    for member_id, delay in delays:
        queue.enqueue_in(timedelta(seconds=delay), SEND_PROBE, member_id, description=f"probe({member_id})")
    log(_log, logging.INFO, "delivery probes scheduled", portals=len(delays))
    return len(delays)


def send(member_id: str) -> str:
    """The RQ job: settle the previous probe, then send a new one. Returns what happened."""
    from workers.runner import context

    job = context.current()
    client, keys = job.redis, job.keys
    key = keys.probe(member_id)
    if client.hget(key, "marker") is not None:
        PROBES_MISSING.inc()
        client.hset(key, mapping={"result": "missing", "missing_at": time.time()})
        client.hdel(key, "marker")
        log(_log, logging.WARNING, "delivery probe missing", member_id=member_id)
    portal = store.run(client, store.load_portal(keys, member_id))
    if (
        portal is None
        or portal.status is not Status.ACTIVE
        or not (portal.access_token or portal.refresh_token)
    ):
        return "skipped"
    marker = secrets.token_hex(12)
    client.hset(key, mapping={"marker": marker, "sent_at": time.time()})
    try:
        client_for(job.settings, client, member_id).call("event.test", {MARKER: marker})
    except (RateLimited, OperatingLimit) as exc:
        _withdraw(client, key, marker)
        raise Defer(member_id, max(0.0, exc.after), isinstance(exc, RateLimited), str(exc)) from None
    except (ReauthRequired, AuthRevoked):
        _withdraw(client, key, marker)
        return "reauth"
    except B24Error as exc:
        _withdraw(client, key, marker)
        if exc.retryable:
            raise
        client.hset(key, mapping={"result": "error", "error": exc.code})
        return "failed"
    except Exception:
        _withdraw(client, key, marker)
        raise
    return "sent"


def _withdraw(client: redis.Redis, key: str, marker: str) -> None:
    """A probe whose call failed was never sent: it must not count as missing later."""
    current = client.hget(key, "marker")
    if current is not None and as_text(current) == marker:
        client.hdel(key, "marker")
