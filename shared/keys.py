"""Every Redis key and queue name b24pipe uses, in one place.

All keys start with the namespace (`B24PIPE_NAMESPACE`), so several apps can share one
Redis without seeing each other. The one deliberate exception is the rate bucket of a
portal: Bitrix24 counts requests per portal *and source IP*, so by default every app on
this Redis shares a portal's bucket (`B24PIPE_RATE_SCOPE=shared`).

RQ's own keys (jobs, queues, registries, workers) are RQ's business, named in
`shared.rqkeys` from RQ's classes; we only choose the queue names, which carry the namespace.
"""

from __future__ import annotations

from dataclasses import dataclass

LIFECYCLE = "lifecycle"
EVENTS = "events"


@dataclass(frozen=True, slots=True)
class Keys:
    ns: str

    # --- queues (RQ queue names) ---------------------------------------------------------
    @property
    def lifecycle_queue(self) -> str:
        return f"{self.ns}:{LIFECYCLE}"

    @property
    def events_queue(self) -> str:
        return f"{self.ns}:{EVENTS}"

    @property
    def queues(self) -> tuple[str, str]:
        """Queue names in the order workers serve them: lifecycle first."""
        return (self.lifecycle_queue, self.events_queue)

    # --- portals -------------------------------------------------------------------------
    @property
    def portals(self) -> str:
        """Set of every known member_id."""
        return f"{self.ns}:portals"

    def portal(self, member_id: str) -> str:
        """Hash: the portal record (see shared.portals)."""
        return f"{self.ns}:portal:{member_id}"

    def app_tokens(self, member_id: str) -> str:
        """Hash: application-token digest -> JSON {kind, expires_at} (0 = no expiry)."""
        return f"{self.ns}:portal:{member_id}:apptokens"

    @property
    def portals_version(self) -> str:
        """Counter bumped on every change that affects token checks; ingress caches watch it."""
        return f"{self.ns}:portals:version"

    def pending_install(self, member_id: str, token_digest: str) -> str:
        """Hash: an install waiting for verification, one per (member id, application token):
        a second install for the same member id never replaces it."""
        return f"{self.ns}:pending:{member_id}:{token_digest}"

    def quarantine(self, member_id: str, token_digest: str) -> str:
        """List: events carrying that pending install's token, waiting for its verification."""
        return f"{self.ns}:quarantine:{member_id}:{token_digest}"

    def pending_tokens(self, member_id: str) -> str:
        """Set: digests of the member id's pending installs (to find them all: revoke, purge)."""
        return f"{self.ns}:pending-tokens:{member_id}"

    @property
    def pending_index(self) -> str:
        """Sorted set: every pending install as "member_id:digest", scored by its expiry
        (the global cap on pending installs counts it)."""
        return f"{self.ns}:pending-index"

    @property
    def quarantine_bytes(self) -> str:
        """Hash: "member_id:digest" -> bytes quarantined (the global and per-install caps)."""
        return f"{self.ns}:quarantine-bytes"

    # --- ingress -------------------------------------------------------------------------
    def dedupe(self, fingerprint: str) -> str:
        return f"{self.ns}:dedupe:{fingerprint}"

    # --- tokens and REST -----------------------------------------------------------------
    def refresh_lock(self, member_id: str) -> str:
        return f"{self.ns}:refresh-lock:{member_id}"

    @property
    def token_issued(self) -> str:
        """Sorted set: member id -> when its OAuth pair was last issued (keep-alive index)."""
        return f"{self.ns}:tokens:issued"

    @property
    def reauth_portals(self) -> str:
        """Set: member ids of portals needing re-authorization (a gauge reads its size)."""
        return f"{self.ns}:portals:reauth"

    @property
    def uninstall_unconfirmed(self) -> str:
        """Set: member ids of portals with an uninstall Bitrix24 could not confirm (kept)."""
        return f"{self.ns}:portals:uninstall-unconfirmed"

    @property
    def keepalive_lock(self) -> str:
        """String: held for one keep-alive interval by the worker that ran the keep-alive."""
        return f"{self.ns}:keepalive-lock"

    # --- event bindings and the delivery probe (workers/portals/binding.py, workers/portals/probe.py) -------
    def bind_lock(self, member_id: str) -> str:
        """String: held while one reconciliation of the portal's bindings runs."""
        return f"{self.ns}:bind-lock:{member_id}"

    @property
    def bind_check_lock(self) -> str:
        """String: held for one B24PIPE_BIND_CHECK_INTERVAL by the worker that scheduled the pass."""
        return f"{self.ns}:bind-check-lock"

    @property
    def bindings_missing(self) -> str:
        """Set: member ids whose last reconciliation left bindings missing (a gauge reads its size)."""
        return f"{self.ns}:bindings:missing"

    def bind_state(self, member_id: str) -> str:
        """Hash: the last reconciliation of a portal (at, outcome, missing, extra)."""
        return f"{self.ns}:bindings:{member_id}"

    @property
    def probe_lock(self) -> str:
        """String: held for one B24PIPE_PROBE_INTERVAL by the worker that scheduled the probes."""
        return f"{self.ns}:probe-lock"

    def probe(self, member_id: str) -> str:
        """Hash: the portal's delivery probe (marker in flight, sent_at, result, latency)."""
        return f"{self.ns}:probe:{member_id}"

    @property
    def last_event(self) -> str:
        """Hash: member id -> when the ingress received the newest event a worker took."""
        return f"{self.ns}:last-event"

    def rate_bucket(self, member_id: str, scope: str = "shared") -> str:
        if scope == "shared":
            return f"b24:rate:{member_id}"
        return f"{self.ns}:rate:{member_id}"

    def operating(self, member_id: str, method: str) -> str:
        return f"{self.ns}:operating:{member_id}:{method}"

    # --- workers -------------------------------------------------------------------------
    def inflight(self, worker: str) -> str:
        """List: job ids a worker has taken and not yet finished (reliable dequeue)."""
        return f"{self.ns}:inflight:{worker}"

    @property
    def workers(self) -> str:
        """Hash: worker name -> last heartbeat (unix seconds)."""
        return f"{self.ns}:workers"

    @property
    def workers_clock(self) -> str:
        """String: Redis's time at the last heartbeat of any worker (outage detection)."""
        return f"{self.ns}:workers-clock"

    def handler_done(self, event_id: str) -> str:
        """Set: handlers that already succeeded for an event (retries are per event and handler)."""
        return f"{self.ns}:done:{event_id}"

    def handler_attempts(self, event_id: str) -> str:
        """Hash: handler id -> failed attempts so far, for handlers still to succeed."""
        return f"{self.ns}:attempts:{event_id}"

    def parked(self, member_id: str) -> str:
        """List: job ids parked while the portal needs re-authorization (released by shared.portalstore.save_portal)."""
        return f"{self.ns}:parked:{member_id}"

    @property
    def parked_portals(self) -> str:
        """Set: member ids that have parked jobs."""
        return f"{self.ns}:parked"

    @property
    def paused_portals(self) -> str:
        """Set: member ids whose processing is paused (`b24pipe portals pause`)."""
        return f"{self.ns}:paused"

    def held(self, member_id: str) -> str:
        """List: job ids of a paused portal, in arrival order, until `portals resume`."""
        return f"{self.ns}:held:{member_id}"

    @property
    def defer_horizon(self) -> str:
        """Hash: member id -> unix time up to which its deferred jobs are already spread out
        (`<member>:s` holds the spacing); fairness across portals (workers.runner.fairness)."""
        return f"{self.ns}:defer-horizon"

    # --- loop guards (workers/guards/loop.py, workers/guards/coalesce.py) ----------------------------
    def echo_marks(self, member_id: str, entity: str, event: str, writer: int | str) -> str:
        """List: expiry times (ms) of our writes to `entity` whose `event` echo by `writer` is due."""
        return f"{self.ns}:echo:{member_id}:{entity}:{event}:{writer}"

    def coalesce_group(self, member_id: str, handler: str, scope: str) -> str:
        """Hash: an open coalescing or batch group of one handler (scope: `<event>:<entity>`,
        or `batch` for the portal's batch group): leader job, times, newest event per item."""
        return f"{self.ns}:group:{member_id}:{handler}:{scope}"

    def coalesce_claim(self, member_id: str, handler: str, job_id: str) -> str:
        """Hash: a group its leader job claimed, kept until the handler succeeded on it."""
        return f"{self.ns}:group:{member_id}:{handler}:claim:{job_id}"

    def chain(self, member_id: str, entity: str) -> str:
        """String: the writer user of the pipeline's last write to an entity; lives one loop window."""
        return f"{self.ns}:chain:{member_id}:{entity}"

    def chain_cycles(self, member_id: str, entity: str) -> str:
        """Sorted set: event id -> time (ms) of write-echo-write cycles on an entity, in the window."""
        return f"{self.ns}:chain:{member_id}:{entity}:cycles"

    # --- offline events (workers/portals/offline.py) ---------------------------------------------
    def offline_batches(self, member_id: str) -> str:
        """Hash: batch id (Bitrix24's process_id, or `read:<n>` for a destructive read) ->
        JSON {at, rows, queued}: what was taken from the portal's queue and not yet cleared."""
        return f"{self.ns}:offline:{member_id}:batches"

    def offline_lock(self, member_id: str) -> str:
        """String: the drain job holding the portal's offline queue (one consumer at a time)."""
        return f"{self.ns}:offline:{member_id}:lock"

    def offline_queued(self, member_id: str) -> str:
        """String: a drain job is queued for the portal (the doorbell's debounce)."""
        return f"{self.ns}:offline:{member_id}:queued"

    def offline_state(self, member_id: str) -> str:
        """Hash: the portal's offline state: `extended` (1/0, from feature.get or
        WRONG_LICENSE) and `feature_at`, `checked_at`, `drained_at`, `running` (the drain job
        holding it; still set after a drain died)."""
        return f"{self.ns}:offline:{member_id}:state"

    def offline_unreadable(self, member_id: str) -> str:
        """List: offline rows that could not be turned into events even on the error lane (JSON)."""
        return f"{self.ns}:offline:{member_id}:unreadable"

    @property
    def offline_backlog(self) -> str:
        """Hash: member id -> rows in its offline queue, as last read with event.offline.list."""
        return f"{self.ns}:offline:backlog"

    @property
    def offline_held(self) -> str:
        """Sorted set: member id -> when its oldest stored batch was taken (the age alert)."""
        return f"{self.ns}:offline:held"

    @property
    def offline_due(self) -> str:
        """Sorted set: member id -> when its fallback poll is due."""
        return f"{self.ns}:offline:due"

    @property
    def offline_poll_lock(self) -> str:
        """String: held for one poll step by the worker that rang the due portals."""
        return f"{self.ns}:offline:poll-lock"

    @property
    def offline_connector(self) -> str:
        """String: this namespace's generated `auth_connector`."""
        return f"{self.ns}:offline:connector"
