"""Make a portal's `event.bind` registrations match the registered handlers.

Bitrix24 drops an app's bindings on uninstall and each version's installer must bind again;
binding twice fails with "Handler already binded", so binding is a diff against `event.get`:
bind what is missing, unbind what points at our URL but is no longer handled. Run by the
worker after a verified install or update, and by `b24pipe portals bind M`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.events import LIFECYCLE_EVENTS
from shared.logs import log
from shared.settings import Settings
from workers import offline, offlinerows
from workers.client import B24, BATCH_MAX, client_for

_log = logging.getLogger("b24pipe.binding")

# Lifecycle events worth receiving after install (ONAPPINSTALL itself has happened already).
BOUND_LIFECYCLE = ("ONAPPUPDATE", "ONAPPUNINSTALL")


@dataclass(frozen=True)
class Plan:
    bind: tuple[str, ...]
    unbind: tuple[str, ...]


def binding_plan(existing: Sequence[Mapping[str, Any]], wanted: Iterable[str], handler_url: str) -> Plan:
    """What to bind and unbind so that exactly `wanted` events reach `handler_url` (pure)."""
    ours = {
        str(b.get("event", "")).upper()
        for b in existing
        if str(b.get("handler", "")) == handler_url and str(b.get("event_type") or "online") == "online"
    }
    want = {name.upper() for name in wanted} | set(BOUND_LIFECYCLE)
    stale = ours - want - (LIFECYCLE_EVENTS - set(BOUND_LIFECYCLE))
    return Plan(bind=tuple(sorted(want - ours)), unbind=tuple(sorted(stale)))


def handler_url(settings: Settings) -> str | None:
    return f"{settings.public_url}/b24/events" if settings.public_url else None


def bind_with(
    b24: B24, events: Iterable[str], url: str, offline_events: Iterable[str] = (), connector: str = ""
) -> Plan:
    """Apply the plan through a client (one `event.get`, then batches of 50 if anything
    changed). `offline_events` are bound offline with `connector` instead (workers.offline)."""
    existing = b24.call("event.get")
    offline_events = list(offline_events)
    plan = binding_plan(existing, offlinerows.online_events(events, offline_events), url)
    commands = [("event.bind", offlinerows.bind_params(name, url)) for name in plan.bind]
    commands += [("event.unbind", {"event": name, "handler": url}) for name in plan.unbind]
    commands += offlinerows.offline_commands(existing, offline_events, connector)
    for start in range(0, len(commands), BATCH_MAX):
        b24.batch(commands[start : start + BATCH_MAX]).raise_first()
    return plan


def bind_portal(settings: Settings, member_id: str, events: Iterable[str]) -> Plan | None:
    """Bind `events` (the registered handlers' event names) plus the lifecycle events to
    B24PIPE_PUBLIC_URL on one portal. None when no public URL is configured (skipped)."""
    url = handler_url(settings)
    if url is None:
        log(
            _log, logging.WARNING, "B24PIPE_PUBLIC_URL is not set: event binding skipped", member_id=member_id
        )
        return None
    connector = offline.ensure_connector(settings, member_id)
    client = client_for(settings, None, member_id)
    plan = bind_with(client, events, url, settings.offline_events, connector)
    log(
        _log,
        logging.INFO,
        "events bound",
        member_id=member_id,
        bound=list(plan.bind),
        unbound=list(plan.unbind),
    )
    return plan
