"""One simulated Bitrix24 portal: identity, plan, users, the app's installation, its data.

All mutable per-portal state lives here (bucket, clock, faults, bindings, offline queue,
statistics), so tests that each create their own portal are isolated from one another
inside one shared simulator process.
"""

from __future__ import annotations

import secrets
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from b24pipe.sim.bucket import LeakyBucket
from b24pipe.sim.clock import Clock
from b24pipe.sim.crm import CrmStore
from b24pipe.sim.faults import Faults
from b24pipe.sim.offline import OfflineQueue
from b24pipe.sim.operating import OperatingTime

DOORBELL = "ONOFFLINEEVENT"
PLANS: dict[str, tuple[float, float]] = {"standard": (2.0, 50.0), "enterprise": (5.0, 250.0)}


@dataclass
class User:
    id: int
    admin: bool
    name: str = ""
    last_name: str = ""


@dataclass
class AppInstall:
    version: int
    application_token: str
    handler_url: str | None
    install_url: str | None
    installer_id: int
    lifecycle_to_handler: bool = True
    language: str = "en"
    installed: bool = True
    # Until the install page calls BX24.installFinish() the app counts as not installed and
    # gets no events; headless apps (no install page) are finished at once.
    finished: bool = True
    finish_calls: int = 0


@dataclass
class Binding:
    id: int
    event: str
    handler: str
    auth_type: int = 0
    offline: bool = False
    connector: str | None = None
    min_timeout: float = 0.0  # options[minTimeout] of an ONOFFLINEEVENT binding (seconds)
    rang_at: float | None = None  # when this doorbell binding last rang

    def as_api(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "event": self.event,
            "handler": self.handler,
            "auth_type": str(self.auth_type),
            "offline": 1 if self.offline else 0,
        }
        if self.connector:
            answer["connector_id"] = self.connector
        return answer


@dataclass(frozen=True)
class Change:
    """An entity changed; who did it decides the event's auth block (None: a robot)."""

    event: str
    entity_id: str
    user_id: int | None
    auth_connector: str | None = None


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    refreshes: int = 0
    refresh_reused: int = 0
    oauth_requests: int = 0  # token requests that reached the server (counted on arrival)
    answers_lost: int = 0  # requests run and committed whose answer was dropped (faults.py)
    idempotent_replays: int = 0  # REST 3.0 requests answered from the Idempotency-Key store
    events_sent: int = 0
    events_failed: int = 0
    deliveries: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5000))


class Portal:
    def __init__(
        self,
        *,
        base_url: str,
        member_id: str,
        domain: str,
        drain: float,
        burst: float,
        users: list[User],
        scope: list[str],
        token_ttl: int,
        status: str = "L",
        offline_extended: bool = True,
    ) -> None:
        self.base_url = base_url
        self.member_id = member_id
        self.domain = domain
        self.old_domains: list[str] = []
        self.users = {user.id: user for user in users}
        self.scope = scope
        self.token_ttl = token_ttl
        self.status = status
        self.offline_extended = offline_extended
        self.clock = Clock()
        self.bucket = LeakyBucket(drain, burst, self.clock.monotonic())
        self.operating = OperatingTime()
        self.faults = Faults()
        self.stats = Stats()
        self.app: AppInstall | None = None
        self.crm = CrmStore()
        self.bindings: list[Binding] = []
        self.offline = OfflineQueue()
        self.webhooks: dict[str, int] = {}  # inbound-webhook secret -> the user it acts as
        self.payment_expired = False  # a paid app whose payment expired: no events at all
        self._next_binding = 1

    @property
    def client_endpoint(self) -> str:
        return f"{self.base_url}/p/{self.domain}/rest/"

    @property
    def server_endpoint(self) -> str:
        return f"{self.base_url}/rest/"

    @property
    def installed(self) -> bool:
        return self.app is not None and self.app.installed

    @property
    def delivering(self) -> bool:
        """Whether Bitrix24 sends this app business events (and ONAPPTEST) at all."""
        return self.installed and self.app is not None and self.app.finished and not self.payment_expired

    def add_webhook(self, user_id: int) -> str:
        """An inbound webhook: its URL carries the user id and a secret instead of a token."""
        secret = secrets.token_hex(8)
        self.webhooks[secret] = user_id
        return f"{self.client_endpoint}{user_id}/{secret}/"

    def next_handler_id(self) -> int:
        value = self._next_binding
        self._next_binding += 1
        return value

    def bind(self, event: str, handler: str, auth_type: int, offline: bool, connector: str | None) -> Binding:
        binding = Binding(self.next_handler_id(), event.upper(), handler, auth_type, offline, connector)
        self.bindings.append(binding)
        return binding

    def install(
        self,
        *,
        version: int,
        handler_url: str | None,
        install_url: str | None,
        installer_id: int,
        lifecycle_to_handler: bool,
    ) -> AppInstall:
        self.app = AppInstall(
            version, secrets.token_hex(16), handler_url, install_url, installer_id, lifecycle_to_handler
        )
        return self.app

    def online_targets(self, event: str) -> list[Binding]:
        return [b for b in self.bindings if b.event == event and not b.offline]

    def queue_offline(self, change: Change, data: dict[str, Any]) -> bool:
        """Offline rules: latest record per object; a matching auth_connector hides the app's
        own write. True when the change was queued."""
        for binding in self.bindings:
            if not binding.offline or binding.event != change.event:
                continue
            if binding.connector and change.auth_connector == binding.connector:
                continue
            if self.faults.offline_unreadable:
                self.faults.offline_unreadable -= 1
                # a row whose EVENT_DATA is a broken serialisation instead of an array
                garbled = {"garbled": change.entity_id}
                self.offline.put(change.event, garbled, change.user_id, self.clock.time(), raw="a:1:{i:0;")
                return True
            self.offline.put(change.event, data, change.user_id, self.clock.time())
            return True
        return False

    def doorbells(self) -> list[Binding]:
        """The ONOFFLINEEVENT bindings to ring now that a row was added: each at most once per
        its `minTimeout` (best effort, as on Bitrix24: a ring swallowed by the throttle is not
        sent later, hence the consumer's fallback poll)."""
        now = self.clock.time()
        due = [
            b
            for b in self.bindings
            if b.event == DOORBELL
            and not b.offline
            and (b.rang_at is None or now - b.rang_at >= b.min_timeout)
        ]
        for binding in due:
            binding.rang_at = now
        return due

    def snapshot(self) -> dict[str, Any]:
        """Introspection for tests and benchmarks."""
        stats = self.stats
        return {
            "member_id": self.member_id,
            "domain": self.domain,
            "installed": self.installed,
            "install_finished": bool(self.app and self.app.finished),
            "install_finish_calls": self.app.finish_calls if self.app else 0,
            "payment_expired": self.payment_expired,
            "requests": dict(stats.requests),
            "requests_total": sum(stats.requests.values()),
            "statuses": dict(stats.statuses),
            "errors": dict(stats.errors),
            "query_limit_exceeded": stats.errors.get("QUERY_LIMIT_EXCEEDED", 0),
            "operation_time_limit": stats.errors.get("OPERATION_TIME_LIMIT", 0),
            "refreshes": stats.refreshes,
            "refresh_reused": stats.refresh_reused,
            "oauth_requests": stats.oauth_requests,
            "answers_lost": stats.answers_lost,
            "idempotent_replays": stats.idempotent_replays,
            "events_sent": stats.events_sent,
            "events_failed": stats.events_failed,
            "bucket_level": round(self.bucket.level_at(self.clock.monotonic()), 6),
            "bucket": {
                "drain": self.bucket.drain,
                "burst": self.bucket.burst,
                "foreign_rate": self.bucket.foreign_rate,
            },
            "clock": {"offset": self.clock.offset, "frozen": self.clock.frozen, "time": self.clock.time()},
            "bindings": [b.as_api() | {"id": b.id} for b in self.bindings],
            "offline_queue": len(self.offline.records),
            "offline_reserved": sum(1 for r in self.offline.records if r.process_id),
            "offline_errored": sum(1 for r in self.offline.records if r.error),
            "faults": self.faults.as_dict(),
        }
