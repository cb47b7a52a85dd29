"""Make a portal's `event.bind` registrations match what the pipeline wants delivered.

Bitrix24 drops an app's bindings on uninstall and when a new version is installed (without
a reliable ONAPPUPDATE to say so), and binding a pair twice fails with `ERROR_CORE`
"Handler already binded". So bindings are never made blindly: one reconciliation reads
`event.get`, binds what `desired_bindings` wants and is missing, and unbinds our own stale
ones (at our URL, events no longer handled). It runs as a lifecycle job (`reconcile`):

- after every token arrival: a verified ONAPPINSTALL, install page or ONAPPUPDATE
  (`workers.dispatch.run_event` schedules it when the lifecycle event is taken) and
  `b24pipe portals add` with OAuth tokens;
- on a timer, because bindings vanish without notice: `periodic` lets one worker per
  `B24PIPE_BIND_CHECK_INTERVAL` schedule one job per portal, spread across the interval;
- by hand: `b24pipe portals bind M` (the same reconciliation, in the foreground).

At most one reconciliation per portal runs at a time (`Keys.bind_lock`); its calls go
through the shared limiter; transient errors are retried by the worker with backoff. The
outcome is logged, counted (`b24pipe_bind_reconciliations_total`) and kept per portal in
Redis (`Keys.bind_state`, `Keys.bindings_missing`) for `portals doctor` and the gauge.
"""

from __future__ import annotations

import logging
import secrets
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from prometheus_client import Counter
from rq import Queue

from shared import lua
from shared import portalstore as store
from shared.events import LIFECYCLE_EVENTS
from shared.jobs import DOORBELL, RECONCILE_BINDINGS
from shared.keys import Keys
from shared.logs import log, scrub
from shared.portals import Status, as_text
from shared.settings import Settings
from workers.errors import AuthRevoked, B24Error, OperatingLimit, RateLimited, ReauthRequired
from workers.portals import offline
from workers.rest.client import B24, BATCH_MAX, client_for
from workers.runner.outcome import Defer, Reschedule

_log = logging.getLogger("b24pipe.binding")

# Lifecycle events bound on every portal besides the handlers' events: updates and
# uninstalls must reach the pipeline, and ONAPPTEST carries the delivery probe.
ALWAYS_BOUND = ("ONAPPUPDATE", "ONAPPUNINSTALL", "ONAPPTEST")
BUSY_RETRY = 2.0  # seconds before a reconciliation that found another one running tries again
OUTCOMES = ("unchanged", "changed", "skipped", "reauth", "failed", "busy", "deferred")

RECONCILIATIONS = Counter(
    "b24pipe_bind_reconciliations_total", "Binding reconciliations by outcome", ["outcome"]
)


@dataclass(frozen=True, order=True)
class Binding:
    """One `event.bind` registration, as compared with `event.get`'s rows."""

    event: str
    handler: str = ""  # the URL of an online binding; offline bindings have none
    event_type: str = "online"  # "online" or "offline"
    auth_connector: str = ""  # offline: writes made with this connector are not queued back

    @classmethod
    def from_api(cls, row: Mapping[str, Any]) -> Binding:
        """A row of `event.get` (`offline` is 0/1 there; `event_type` accepted too)."""
        offline = str(row.get("offline", "0")) in ("1", "true", "True") or row.get("event_type") == "offline"
        return cls(
            event=str(row.get("event", "")).upper(),
            handler="" if offline else str(row.get("handler", "")),
            event_type="offline" if offline else "online",
            auth_connector=str(row.get("connector_id") or row.get("auth_connector") or ""),
        )

    def bind_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"event": self.event}
        if self.event_type == "offline":
            params["event_type"] = "offline"
            if self.auth_connector:
                params["auth_connector"] = self.auth_connector
        else:
            params["handler"] = self.handler
            if self.event == DOORBELL:  # at most one ring a second (best effort: the poll covers)
                params["options"] = {"minTimeout": 1}
        return params

    def unbind_params(self) -> dict[str, str]:
        if self.event_type == "offline":
            return {"event": self.event, "event_type": "offline"}
        return {"event": self.event, "handler": self.handler}


@dataclass(frozen=True)
class BindingDiff:
    bind: tuple[Binding, ...]
    unbind: tuple[Binding, ...]

    @property
    def changed(self) -> bool:
        return bool(self.bind or self.unbind)

    def report(self) -> dict[str, list[str]]:
        return {
            "bound": [b.event for b in self.bind],
            "unbound": [b.event for b in self.unbind],
        }


def desired_bindings(
    handled: Iterable[str], url: str, settings: Settings, connector: str = ""
) -> frozenset[Binding]:
    """Every binding the pipeline wants on a portal (pure): each handled event and the
    lifecycle events in ALWAYS_BOUND, online at `url` (`<B24PIPE_PUBLIC_URL>/b24/events`).
    `settings` is what further kinds of binding are decided by: `B24PIPE_OFFLINE_EVENTS` are
    bound offline with the portal's `connector` (workers.portals.offline) and ONOFFLINEEVENT online."""
    offline_events = {name.upper() for name in settings.offline_events}
    names = ({name.upper() for name in handled} - offline_events) | set(ALWAYS_BOUND)
    if offline_events:  # taken offline (never both ways: it would run twice), the doorbell online
        names.add(DOORBELL)
    return frozenset(
        {Binding(name, url) for name in names}
        | {Binding(name, "", "offline", connector) for name in offline_events}
    )


def binding_diff(existing: Sequence[Mapping[str, Any]], desired: Iterable[Binding], url: str) -> BindingDiff:
    """What to bind and unbind so that exactly `desired` is registered (pure). Only our own
    bindings (at `url`) are ever unbound, and never a lifecycle event the pipeline did not
    ask for (an installation handler at our URL, say)."""
    have = {Binding.from_api(row) for row in existing}
    want = set(desired)
    ours = {b for b in have if b.event_type == "online" and b.handler == url}
    stale = {b for b in ours - want if b.event not in LIFECYCLE_EVENTS}
    return BindingDiff(bind=tuple(sorted(want - have)), unbind=tuple(sorted(stale)))


def handler_url(settings: Settings) -> str | None:
    return f"{settings.public_url}/b24/events" if settings.public_url else None


def bind_with(b24: B24, desired: Iterable[Binding], url: str) -> BindingDiff:
    """Apply the diff through a client: one `event.get`, then batches of 50 only if
    anything is to change."""
    diff = binding_diff(b24.call("event.get"), desired, url)
    commands = [("event.bind", b.bind_params()) for b in diff.bind]
    commands += [("event.unbind", b.unbind_params()) for b in diff.unbind]
    for start in range(0, len(commands), BATCH_MAX):
        b24.batch(commands[start : start + BATCH_MAX]).raise_first()
    return diff


def _handled_events() -> frozenset[str]:
    from workers import handlers  # the worker has loaded the handler modules already

    return handlers.registered_events()


def bind_portal(settings: Settings, member_id: str, events: Iterable[str]) -> BindingDiff | None:
    """Reconcile one portal's bindings for `events` (the registered handlers' event names)
    in the foreground. None when no public URL is configured (skipped)."""
    url = handler_url(settings)
    if url is None:
        log(
            _log, logging.WARNING, "B24PIPE_PUBLIC_URL is not set: event binding skipped", member_id=member_id
        )
        return None
    connector = offline.ensure_connector(settings, member_id)
    desired = desired_bindings(events, url, settings, connector)
    diff = bind_with(client_for(settings, None, member_id), desired, url)
    log(_log, logging.INFO, "events bound", member_id=member_id, **diff.report())
    return diff


# --- the lifecycle job -----------------------------------------------------------------------


def schedule(connection: redis.Redis, keys: Keys, member_id: str, reason: str, delay: float = 0) -> None:
    """Queue a reconciliation of one portal on the lifecycle queue (now, or after `delay`)."""
    queue = Queue(keys.lifecycle_queue, connection=connection)
    description = f"reconcile_bindings({member_id}, {reason})"
    if delay > 0:
        queue.enqueue_in(
            timedelta(seconds=delay), RECONCILE_BINDINGS, member_id, reason, description=description
        )
    else:
        queue.enqueue(RECONCILE_BINDINGS, member_id, reason, description=description)


def reconcile(member_id: str, reason: str = "") -> str:
    """The RQ job: reconcile one portal's bindings (see the module docstring). Returns the
    outcome; raises `Defer`/`Reschedule` when it must run later, any other error to be
    retried by the worker."""
    from workers.runner import context

    job = context.current()
    outcome, detail = _reconcile(job.redis, job.keys, job.settings, member_id)
    RECONCILIATIONS.labels(outcome).inc()
    log(
        _log,
        logging.WARNING if outcome in ("failed", "reauth") else logging.INFO,
        "bindings reconciled",
        member_id=member_id,
        reason=reason,
        outcome=outcome,
        **detail,
    )
    return outcome


def _reconcile(
    client: redis.Redis, keys: Keys, settings: Settings, member_id: str
) -> tuple[str, dict[str, Any]]:
    url = handler_url(settings)
    if url is None:
        return "skipped", {"why": "B24PIPE_PUBLIC_URL is not set"}
    portal = store.run(client, store.load_portal(keys, member_id))
    if portal is None or portal.status is Status.REVOKED:
        client.srem(keys.bindings_missing, member_id)  # nothing to bind to: not an alert any more
        return "skipped", {"why": "unknown or revoked portal"}
    if portal.status is not Status.ACTIVE:
        return "skipped", {"why": f"portal is {portal.status}"}
    if not portal.refresh_token and not portal.access_token:
        return "skipped", {"why": "no OAuth tokens (event.bind needs app auth)"}
    lock, holder = keys.bind_lock(member_id), secrets.token_hex(16)
    if not client.set(lock, holder, nx=True, px=int((settings.http_timeout * 4 + 10) * 1000)):
        RECONCILIATIONS.labels("busy").inc()
        raise Reschedule(BUSY_RETRY, "another reconciliation of this portal is running")
    try:
        b24 = client_for(settings, client, member_id)
        connector = offline.ensure_connector(settings, member_id)
        desired = desired_bindings(_handled_events(), url, settings, connector)
        try:
            diff = bind_with(b24, desired, url)
        except (RateLimited, OperatingLimit) as exc:
            RECONCILIATIONS.labels("deferred").inc()
            raise Defer(member_id, max(0.0, exc.after), isinstance(exc, RateLimited), str(exc)) from None
        except (ReauthRequired, AuthRevoked) as exc:
            _record(client, keys, member_id, "reauth", None, error=exc.code)
            return "reauth", {"error": exc.code}
        except B24Error as exc:
            if exc.retryable:
                raise
            _record(client, keys, member_id, "failed", None, error=scrub(str(exc)))
            return "failed", {"error": scrub(str(exc))}
    finally:
        lua.script(client, "shared/lua/portalstore_lock_release.lua")(keys=[lock], args=[holder])
    outcome = "changed" if diff.changed else "unchanged"
    _record(client, keys, member_id, outcome, diff)
    return outcome, diff.report()


def _record(
    client: redis.Redis, keys: Keys, member_id: str, outcome: str, diff: BindingDiff | None, error: str = ""
) -> None:
    """The portal's last reconciliation, for `portals doctor` and the missing-bindings gauge:
    a reconciliation that could not bind leaves the portal counted as missing bindings."""
    state: dict[Any, str] = {"at": f"{time.time():.3f}", "outcome": outcome, "error": error}
    if diff is not None:
        state["repaired"] = ",".join(b.event for b in diff.bind)
    with client.pipeline(transaction=False) as pipe:
        pipe.hset(keys.bind_state(member_id), mapping=state)
        if diff is not None:
            pipe.srem(keys.bindings_missing, member_id)
        elif outcome in ("reauth", "failed"):
            pipe.sadd(keys.bindings_missing, member_id)
        pipe.execute()


# --- the periodic pass -----------------------------------------------------------------------


def spread(members: Sequence[str], interval: float) -> list[tuple[str, float]]:
    """Each portal's delay within one interval (pure): evenly spaced, in an order fixed by
    the member id's hash, so no thundering herd at the top of the interval and each portal
    keeps its place from one interval to the next."""
    ordered = sorted(members, key=lambda m: (zlib.crc32(m.encode()), m))
    step = interval / max(1, len(ordered))
    return [(member, round(i * step, 3)) for i, member in enumerate(ordered)]


def claim_pass(client: redis.Redis, lock: str, interval: int) -> bool:
    """True for the one process that runs this interval's pass. The lock is never released:
    its expiry is what spaces the passes one interval apart (as the keep-alive's)."""
    return interval > 0 and bool(client.set(lock, "1", nx=True, ex=interval))


def active_members(client: redis.Redis, keys: Keys) -> list[str]:
    return sorted(as_text(m) for m in client.smembers(keys.portals) if isinstance(m, bytes | str))


def periodic(settings: Settings, client: redis.Redis) -> int:
    """One reconciliation pass if it is this process's turn: one job per portal, spread
    across B24PIPE_BIND_CHECK_INTERVAL. Returns the number of jobs scheduled."""
    keys = Keys(settings.namespace)
    if handler_url(settings) is None or not claim_pass(
        client, keys.bind_check_lock, settings.bind_check_interval
    ):
        return 0
    delays = spread(active_members(client, keys), settings.bind_check_interval)
    for member_id, delay in delays:
        schedule(client, keys, member_id, "periodic", delay)
    log(_log, logging.INFO, "binding check scheduled", portals=len(delays))
    return len(delays)
