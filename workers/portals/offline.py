"""The offline lane: drain a portal's Bitrix24 offline-event queue into ordinary event jobs.

Online events are lost when the ingress is down; the rows of the offline queue wait until
the app reads them (bitrix24.md §2, §8). `drain(member_id)` is the RQ job that reads them,
crash-safe, one consumer per portal:

1. it holds `Keys.offline_lock` (lease renewed at each step; its value is the job id, so the
   same job put back after its worker died takes its own lock over at once);
2. it first finishes what an earlier run left in `Keys.offline_batches`: every stored
   `process_id` is read again with `clear=0` (never without it: a `process_id` without
   `clear=0` deletes the batch), merged with the stored rows, queued, then cleared;
3. it reserves a batch (`event.offline.get`, `clear=0`, `limit`), stores the `process_id`
   and the rows before anything else, turns each row into one event job (`shared.jobs`, the
   ingress's own enqueue, so retries, the failed registry, coalescing and the loop guards
   apply unchanged) in the same transaction that marks the batch queued, marks the rows that
   cannot be events with `event.offline.error`, clears the batch at Bitrix24, and forgets it;
   again until a batch comes back short.

The row's identity (`workers.portals.offlinerows.event_id`) makes a re-read batch de-duplicate
against what was queued. A reservation whose answer never arrived (the worker died between
Bitrix24's answer and the store) is found by `event.offline.list` (its `PROCESS_ID` is one we
never stored) when the next drain sees the previous one did not finish, and adopted.

Without the `rest_offline_extended` feature a reserving read fails with `WRONG_LICENSE`:
the drain falls back to destructive reads (`clear=1`) and stores each batch in the step
that reads it. The window left is the time between Bitrix24 deleting the rows and Redis
storing them (a worker killed then loses that batch); `b24pipe_offline_rows_total{outcome=
"destructive"}` counts the rows read so. The feature is asked once per portal
(`feature.get`) and again every `FEATURE_RECHECK` seconds.

What starts a drain (the doorbell, the fallback poll) is `workers.portals.doorbell`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import redis
from prometheus_client import Counter

from shared import lua
from shared import portalstore as store
from shared.jobs import ENQUEUE, JobTemplate, QueuedJob, queue_for, script_call
from shared.keys import Keys
from shared.logs import log
from shared.portals import Portal, Status, as_text, namespace_connector
from shared.settings import Settings
from workers.errors import AccessDenied, AuthRevoked, B24Error, OperatingLimit, RateLimited, ReauthRequired
from workers.portals.doorbell import schedule
from workers.portals.offlinerows import FEATURE, Batch, merged_rows, row_event
from workers.rest.client import B24, client_for
from workers.runner import context
from workers.runner.outcome import Defer, Park, Reschedule

_log = logging.getLogger("b24pipe.offline")

LIMIT = 500  # rows per reserving read: one request per 500 changes, well inside 60 s
FEATURE_RECHECK = 86400.0  # seconds before `feature.get` is asked again
CHECK_EVERY = 3600.0  # seconds between backlog reads (`event.offline.list`) per portal
UNREADABLE_KEEP = 1000  # rows that can never be events, kept per portal for a human

ROWS = Counter(
    "b24pipe_offline_rows_total",
    "Offline-queue rows by what the drain did: fetched, queued, cleared, errored, destructive",
    ["outcome"],
)
DRAINS = Counter("b24pipe_offline_drains_total", "Drain runs, by result: ok, deferred, parked", ["result"])


def _lease_ms(settings: Settings) -> int:
    return int((settings.http_timeout * 3 + 5) * 1000)  # longer than one call and its retries


def ensure_connector(settings: Settings, member_id: str) -> str:
    """The portal's `auth_connector`, given the namespace's one first if it has none (a
    portal installed before offline events were configured), and the portal put on the poll
    schedule. Run by binding reconciliation; "" when no event is offline."""
    if not settings.offline_events:
        return ""
    from shared.redisconn import sync_redis

    keys, client = Keys(settings.namespace), sync_redis(settings)
    try:
        current = store.run(client, store.give_connector(keys, member_id, namespace_connector(settings)))
        schedule(client, keys, settings, member_id, time.time())
        return current
    finally:
        client.close()


def status(client: redis.Redis, keys: Keys, member_id: str, now: float) -> dict[str, Any]:
    """A portal's offline state for `b24pipe portals show` (Redis only, no Bitrix24 call)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.offline_state(member_id))
        pipe.hvals(keys.offline_batches(member_id))
        pipe.hget(keys.offline_backlog, member_id)
        pipe.llen(keys.offline_unreadable(member_id))
        pipe.zscore(keys.offline_due, member_id)
        state_raw, batches_raw, backlog, unreadable, due = pipe.execute()
    state = {as_text(k): as_text(v) for k, v in state_raw.items()}
    taken = [Batch.load(raw).at for raw in batches_raw]
    extended = state.get("extended")
    return {
        "reservations": {"1": "yes", "0": "no (destructive reads)"}.get(extended or "", "unknown"),
        "backlog": None if backlog is None else int(backlog),
        "batches_held": len(taken),
        "oldest_batch_age": round(now - min(taken), 1) if taken else None,
        "unreadable_rows": int(unreadable),
        "drain_not_finished": "running" in state,  # running now, or died (the next drain recovers)
        "last_drained_at": float(state["drained_at"]) if "drained_at" in state else None,
        "next_poll_in": None if due is None else round(max(0.0, float(due) - now), 1),
    }


# --- the drain -------------------------------------------------------------------------------


class Drain:
    """One drain run over one portal, under its lock (see the module docstring)."""

    def __init__(
        self, client: redis.Redis, keys: Keys, settings: Settings, b24: B24, portal: Portal, holder: str
    ) -> None:
        self.client, self.keys, self.settings, self.b24 = client, keys, settings, b24
        self.portal, self.member_id, self.holder = portal, portal.member_id, holder
        self.batches = keys.offline_batches(portal.member_id)
        self.state = keys.offline_state(portal.member_id)
        self.script = lua.script(client, ENQUEUE)

    # -- Bitrix24 --
    def _call(self, method: str, params: dict[str, Any]) -> Any:
        self._renew()
        if self.portal.auth_connector:
            params = {**params, "auth_connector": self.portal.auth_connector}
        return self.b24.call(method, params)

    def _renew(self) -> None:
        lock = self.keys.offline_lock(self.member_id)
        if self.client.get(lock) != self.holder.encode():
            raise Reschedule(1.0, "offline drain lock lost")  # another drain owns the portal now
        self.client.pexpire(lock, _lease_ms(self.settings))

    # -- the stored batches --
    def _stored(self) -> dict[str, Batch]:
        return {as_text(k): Batch.load(v) for k, v in self.client.hgetall(self.batches).items()}

    def _store(self, batch_id: str, batch: Batch) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.batches, batch_id, batch.dump())
            pipe.zadd(self.keys.offline_held, {self.member_id: batch.at}, nx=True)
            pipe.execute()

    def _forget(self, batch_id: str) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self.batches, batch_id)
            pipe.execute()
        remaining = self._stored()
        if remaining:
            self.client.zadd(self.keys.offline_held, {self.member_id: min(b.at for b in remaining.values())})
        else:
            self.client.zrem(self.keys.offline_held, self.member_id)

    def _queue(self, batch_id: str, batch: Batch) -> list[str]:
        """Queue the batch's rows as event jobs and mark it queued, in one transaction; the
        message ids of rows that cannot be events are returned (nothing queued for them)."""
        now = time.time()
        by_queue: dict[str, list[QueuedJob]] = {}
        bad: list[str] = []
        for row in batch.rows:
            event = row_event(self.member_id, self.portal.domain, row, now)
            if event is None:
                bad.append(str(row.get("MESSAGE_ID", "")))
                continue
            job = QueuedJob.of(self.keys, event.model_dump(mode="json"))
            by_queue.setdefault(queue_for(self.keys, event), []).append(job)
        batch.queued = True
        with self.client.pipeline(transaction=True) as pipe:
            for queue, jobs in by_queue.items():
                script_keys, argv = script_call(JobTemplate.build(queue, self.settings), jobs)
                self.script(keys=script_keys, args=argv, client=pipe)
            pipe.hset(self.batches, batch_id, batch.dump())
            pipe.execute()
        ROWS.labels("queued").inc(len(batch.rows) - len(bad))
        return [m for m in bad if m]

    def _finish(self, batch_id: str, batch: Batch, bad: Sequence[str], by_id: bool = False) -> None:
        """Mark the bad rows, clear the batch at Bitrix24 (jobs are durably queued), forget it.
        `by_id` clears only the rows we hold (a recovered reservation may hold rows its
        re-read did not return: they stay reserved, to be adopted and read again later)."""
        if batch.reserved:
            if bad:
                self._call("event.offline.error", {"process_id": batch_id, "message_id": list(bad)})
                ROWS.labels("errored").inc(len(bad))
            good = [str(r.get("ID")) for r in batch.rows if str(r.get("MESSAGE_ID", "")) not in bad]
            if good or not (bad or by_id):
                params: dict[str, Any] = {"process_id": batch_id}
                if bad or by_id:
                    params["id"] = good
                self._call("event.offline.clear", params)
                ROWS.labels("cleared").inc(len(good))
        self._forget(batch_id)

    # -- the steps --
    def recover(self) -> int:
        """Finish every stored batch of an earlier run; the rows queued by it."""
        queued = 0
        for batch_id, batch in self._stored().items():
            if not batch.queued:
                if batch.reserved:
                    again = self._reread(batch_id)
                    batch.rows = merged_rows(batch.rows, again)
                bad = self._queue(batch_id, batch)
                queued += len(batch.rows) - len(bad)
            else:
                bad = [str(r.get("MESSAGE_ID", "")) for r in batch.rows if row_event("", "", r, 0) is None]
            self._finish(batch_id, batch, bad, by_id=True)
        return queued

    def _reread(self, process_id: str) -> list[dict[str, Any]]:
        """The rows of a stored reservation, read again (`clear=0`: without it, the read deletes)."""
        try:
            answer = self._call("event.offline.get", {"process_id": process_id, "clear": 0, "limit": LIMIT})
        except AccessDenied as exc:
            if exc.code != "WRONG_LICENSE":
                raise
            return []  # the feature went away: what we stored is what we have
        return list(_events(answer))

    def adopt_orphans(self) -> int:
        """Reservations Bitrix24 holds for us that we never stored (their answer was lost):
        stored with no rows, for `recover` to read again. The same read gives the backlog.
        Only the first page (50 rows, oldest first) is read: a lost reservation is older than
        anything queued after it."""
        params = {"auth_connector": self.portal.auth_connector} if self.portal.auth_connector else {}
        self._renew()
        answer = self.b24.batch({"list": ("event.offline.list", params)})
        answer.raise_first()
        page = answer.result.get("list")
        rows = [r for r in page if isinstance(r, dict)] if isinstance(page, list) else []
        self.client.hset(self.keys.offline_backlog, self.member_id, int(answer.total.get("list", len(rows))))
        known = set(self._stored())
        orphans = {str(r.get("PROCESS_ID")) for r in rows if r.get("PROCESS_ID")} - known
        for process_id in orphans:
            self._store(process_id, Batch(time.time()))
        if orphans:
            log(
                _log,
                logging.WARNING,
                "offline: adopted lost reservations",
                member_id=self.member_id,
                count=len(orphans),
            )
        return len(orphans)

    def extended(self) -> bool:
        """Whether reserving reads work here (`feature.get`, cached, re-checked daily)."""
        raw = self.client.hmget(self.state, "extended", "feature_at")
        if raw[0] is not None and time.time() - float(raw[1] or 0) < FEATURE_RECHECK:
            return raw[0] == b"1"
        try:
            value = feature_says(self._call("feature.get", {"CODE": FEATURE}))
        except B24Error as exc:
            if isinstance(exc, (RateLimited, OperatingLimit)):
                raise
            value = True  # unknown: try, and let WRONG_LICENSE say otherwise
        self._remember(value)
        return value

    def _remember(self, extended: bool) -> None:
        self.client.hset(self.state, mapping={"extended": int(extended), "feature_at": time.time()})

    def reserve(self) -> int:
        """One reserving read, processed to the end; the rows it got (0: the queue is empty)."""
        answer = self._call("event.offline.get", {"clear": 0, "limit": LIMIT})
        rows = list(_events(answer))
        process_id = str(answer.get("process_id", "")) if isinstance(answer, Mapping) else ""
        if not rows or not process_id:
            return 0
        batch = Batch(time.time(), rows)
        self._store(process_id, batch)  # before anything else: a crash from here on is recovered
        ROWS.labels("fetched").inc(len(rows))
        self._finish(process_id, batch, self._queue(process_id, batch))
        return len(rows)

    def read_destructively(self) -> int:
        """One destructive read (no reservation without the feature), stored in the same step."""
        self._renew()
        answer = self._call("event.offline.get", {"limit": LIMIT})
        rows = list(_events(answer))
        if not rows:
            return 0
        batch_id = f"read:{secrets.token_hex(8)}"
        batch = Batch(time.time(), rows, reserved=False)
        self._store(batch_id, batch)
        ROWS.labels("fetched").inc(len(rows))
        ROWS.labels("destructive").inc(len(rows))
        self._keep_unreadable(rows, self._queue(batch_id, batch))  # already gone at Bitrix24
        self._forget(batch_id)
        return len(rows)

    def errored(self) -> int:
        """The slow lane: rows marked with `event.offline.error` (by us or anyone) are hidden
        from normal reads; read them with `error=1` on the check cadence and queue them like
        any row. Rows that still cannot be events are kept in `Keys.offline_unreadable`
        (`b24pipe portals show` counts them) and cleared. Returns the rows taken."""
        if not self.extended():
            return 0  # without reservations an error=1 read would delete: leave them to a human
        try:
            answer = self._call("event.offline.get", {"clear": 0, "limit": LIMIT, "error": 1})
        except AccessDenied as exc:
            if exc.code != "WRONG_LICENSE":
                raise
            self._remember(False)
            return 0
        rows = list(_events(answer))
        process_id = str(answer.get("process_id", "")) if isinstance(answer, Mapping) else ""
        if not rows or not process_id:
            return 0
        batch = Batch(time.time(), rows)
        self._store(process_id, batch)
        self._keep_unreadable(rows, self._queue(process_id, batch))
        self._call("event.offline.clear", {"process_id": process_id})
        ROWS.labels("cleared").inc(len(rows))
        self._forget(process_id)
        return len(rows)

    def _keep_unreadable(self, rows: Sequence[Mapping[str, Any]], bad: Sequence[str]) -> None:
        """Keep rows that can never be events for a human (the last UNREADABLE_KEEP)."""
        unreadable = [orjson.dumps(r) for r in rows if str(r.get("MESSAGE_ID", "")) in set(bad)]
        if not unreadable:
            return
        key = self.keys.offline_unreadable(self.member_id)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.rpush(key, *unreadable)
            pipe.ltrim(key, -UNREADABLE_KEEP, -1)
            pipe.execute()
        log(
            _log,
            logging.WARNING,
            "offline: unreadable rows kept",
            member_id=self.member_id,
            rows=len(unreadable),
        )

    def run(self) -> int:
        """Drain until a read comes back short; the rows taken."""
        total = 0
        while True:
            if self.extended():
                try:
                    got = self.reserve()
                except AccessDenied as exc:
                    if exc.code != "WRONG_LICENSE":
                        raise
                    self._remember(False)
                    log(
                        _log,
                        logging.WARNING,
                        "offline: no rest_offline_extended, destructive reads",
                        member_id=self.member_id,
                    )
                    continue
            else:
                got = self.read_destructively()
            total += got
            if got < LIMIT:
                return total


def feature_says(answer: Any) -> bool:
    """Whether `feature.get` leaves reservations possible: only an explicit "no" (`N`, `0`,
    false) counts as no, since a wrong "no" would switch a portal to destructive reads."""
    value = answer.get("value") if isinstance(answer, Mapping) else answer
    if isinstance(value, bool):
        return value
    return str(value).strip().upper() not in ("N", "0", "FALSE")


def _events(answer: Any) -> list[dict[str, Any]]:
    if isinstance(answer, Mapping):
        events = answer.get("events")
        if isinstance(events, list):
            return [row for row in events if isinstance(row, dict)]
    return []


def drain(member_id: str) -> str:
    """The RQ job: drain one portal's offline queue (see the module docstring)."""
    job = context.current()
    client, keys, settings = job.redis, job.keys, job.settings
    from shared import portalstore as store

    portal = store.run(client, store.load_portal(keys, member_id))
    if portal is None or portal.status is Status.REVOKED:
        return "unknown or revoked portal"  # its rows stay at Bitrix24 until it comes back
    holder = job.id or secrets.token_hex(8)
    lock = keys.offline_lock(member_id)
    lease = _lease_ms(settings)
    if not client.set(lock, holder, nx=True, px=lease) and client.get(lock) != holder.encode():
        raise Reschedule(1.0, "another drain holds the portal")  # still queued: the debounce holds
    client.delete(keys.offline_queued(member_id))  # a ring from now on queues the next drain
    b24 = client_for(settings, client, member_id)
    run = Drain(client, keys, settings, b24, portal, holder)
    try:
        unfinished = client.hget(run.state, "running") is not None
        client.hset(run.state, "running", holder)
        checked = float(client.hget(run.state, "checked_at") or 0)
        if unfinished or time.time() - checked > CHECK_EVERY:
            run.adopt_orphans()
            run.errored()
            client.hset(run.state, "checked_at", time.time())
        recovered = run.recover()
        taken = run.run()
        client.hset(keys.offline_backlog, member_id, 0)  # read until a short batch: emptied
        client.hdel(run.state, "running")
        client.hset(run.state, "drained_at", time.time())
        client.zadd(keys.offline_due, {member_id: time.time() + settings.offline_poll})
    except (RateLimited, OperatingLimit) as exc:
        DRAINS.labels("deferred").inc()
        raise Defer(member_id, max(1.0, exc.after), isinstance(exc, RateLimited), str(exc)) from None
    except (ReauthRequired, AuthRevoked) as exc:  # parked like its events: a new token releases it
        DRAINS.labels("parked").inc()
        raise Park(member_id, str(exc)) from None
    finally:
        _release(client, lock, holder)
    DRAINS.labels("ok").inc()
    return f"{recovered} recovered, {taken} taken"


def _release(client: redis.Redis, lock: str, holder: str) -> None:
    lua.script(client, "shared/lua/portalstore_lock_release.lua")(keys=[lock], args=[holder])
