"""`b24pipe portals doctor M`, and the health that `portals show` and `portals list` print.

What Redis knows is read here (`stored_facts`); the doctor also asks the portal itself
(`app.info` for INSTALLED and PAYMENT_EXPIRED, `event.get` for the bindings) through the
ordinary REST client, so it goes through the shared limiter. The decisions are
`b24pipe.health.problems`. Nothing printed carries a secret: error texts are scrubbed.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import redis
from rq.registry import FailedJobRegistry

from b24pipe.health import Facts, Problem, age
from shared import rqkeys
from shared.keys import Keys
from shared.logs import scrub
from shared.portals import Portal, as_text
from shared.settings import Settings


def _text_map(raw: dict[Any, Any]) -> dict[str, str]:
    return {as_text(k): as_text(v) for k, v in raw.items()}


def failed_jobs(client: redis.Redis, keys: Keys, member_id: str) -> int:
    """The portal's jobs in the failed registries (each event job names its portal)."""
    ids = [
        job_id
        for queue in keys.queues
        for job_id in FailedJobRegistry(queue, connection=client).get_job_ids()
    ]
    if not ids:
        return 0
    with client.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(rqkeys.job(job_id), "b24_member")
        members = pipe.execute()
    return sum(1 for m in members if m is not None and as_text(m) == member_id)


def stored_facts(
    client: redis.Redis,
    keys: Keys,
    settings: Settings,
    portal: Portal | None,
    member_id: str,
    *,
    failed: bool,
) -> Facts:
    """What Redis says about one portal (`portal` None: only a pending install is known)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.bind_state(member_id))
        pipe.sismember(keys.bindings_missing, member_id)
        pipe.hgetall(keys.probe(member_id))
        pipe.hget(keys.last_event, member_id)
        pipe.llen(keys.parked(member_id))
        pipe.sismember(keys.uninstall_unconfirmed, member_id)
        bind_raw, missing_flag, probe_raw, last_event, parked, unconfirmed = pipe.execute()
    bind_state, probe = _text_map(bind_raw), _text_map(probe_raw)
    latency = probe.get("latency")
    offline = None
    if settings.offline_events:
        from workers.portals.offline import status

        offline = status(client, keys, member_id, time.time())
    return Facts(
        member_id=member_id,
        status=str(portal.status) if portal else "pending",
        reason=portal.reason if portal else "",
        oauth=bool(portal and (portal.access_token or portal.refresh_token)),
        webhook=bool(portal and portal.webhook_url),
        public_url=settings.public_url is not None,
        reconcile_failed=bool(missing_flag),
        reconcile_error=bind_state.get("error", ""),
        last_event_at=float(as_text(last_event)) if last_event else 0.0,
        probe_result=probe.get("result", ""),
        probe_latency=float(latency) if latency else None,
        probe_error=probe.get("error", ""),
        parked=int(parked or 0),
        failed=failed_jobs(client, keys, member_id) if failed else 0,
        uninstall_unconfirmed=bool(unconfirmed),
        offline=offline,
    )


def live_facts(settings: Settings, facts: Facts) -> Facts:
    """Ask the portal: is the install finished, is the payment current, which bindings exist."""
    from workers.errors import B24Error
    from workers.handlers import registered_events
    from workers.portals.binding import binding_diff, desired_bindings, handler_url
    from workers.rest.client import client_for

    try:
        b24 = client_for(settings, None, facts.member_id)
        info = b24.call("app.info")
        url = handler_url(settings)
        missing: tuple[str, ...] | None = None
        extra: tuple[str, ...] | None = None
        if url is not None:
            diff = binding_diff(
                b24.call("event.get"), desired_bindings(registered_events(), url, settings), url
            )
            missing = tuple(b.event for b in diff.bind)
            extra = tuple(b.event for b in diff.unbind)
    except B24Error as exc:
        return replace(facts, live_error=scrub(str(exc)))
    installed = info.get("INSTALLED") if isinstance(info, dict) else None
    expired = info.get("PAYMENT_EXPIRED") if isinstance(info, dict) else None
    return replace(
        facts,
        installed=installed in (True, "Y", "1", 1),
        payment_expired=expired in (True, "Y", "1", 1),
        missing=missing,
        extra=extra,
    )


def health_block(facts: Facts, found: list[Problem], now: float) -> dict[str, object]:
    """The `health` block of `portals show` (and `portals doctor --json`)."""
    return {
        "healthy": not found,
        "problems": [{"code": p.code, "detail": p.detail, "action": p.action} for p in found],
        "last_event_age": round(now - facts.last_event_at, 1) if facts.last_event_at else None,
        "probe": {"result": facts.probe_result or None, "latency": facts.probe_latency},
        "parked_jobs": facts.parked,
        "failed_jobs": facts.failed,
        "installed": facts.installed,
        "payment_expired": facts.payment_expired,
        "bindings_missing": list(facts.missing) if facts.missing is not None else None,
        "bindings_extra": list(facts.extra) if facts.extra is not None else None,
        "uninstall_unconfirmed": facts.uninstall_unconfirmed,
    }


def report(domain: str, facts: Facts, found: list[Problem], now: float) -> list[str]:
    """The doctor's text: what it saw, then each problem with its fix."""

    def yes(value: bool | None) -> str:
        return "not asked" if value is None else ("yes" if value else "no")

    lines = [
        f"portal {facts.member_id} ({domain})",
        f"  status: {facts.status}; OAuth tokens: {yes(facts.oauth)}; inbound webhook: {yes(facts.webhook)}",
        f"  install finished: {yes(facts.installed)}; payment expired: {yes(facts.payment_expired)}",
    ]
    if facts.missing is not None:
        lines.append(
            f"  bindings missing: {', '.join(facts.missing) or 'none'}; extra: {', '.join(facts.extra or ()) or 'none'}"
        )
    seen = f"{age(now - facts.last_event_at)} ago" if facts.last_event_at else "none yet"
    lines.append(f"  last event received: {seen}")
    probe = facts.probe_result or "never probed"
    if facts.probe_result == "ok" and facts.probe_latency is not None:
        probe += f", latency {facts.probe_latency:.2f} s"
    lines.append(f"  last delivery probe: {probe}")
    lines.append(f"  parked jobs: {facts.parked}; failed jobs: {facts.failed}")
    if facts.uninstall_unconfirmed:
        lines.append("  uninstall: received while re-authorization was needed, unconfirmed")
    if facts.offline is not None:
        off = facts.offline
        oldest = off["oldest_batch_age"]
        held = f"{age(oldest)}" if isinstance(oldest, (int, float)) else "none"
        lines.append(
            f"  offline events: reservations {off['reservations']}; backlog {off['backlog']}; "
            f"batches held {off['batches_held']} (oldest {held}); unreadable rows {off['unreadable_rows']}"
        )
    for problem in found:
        lines.append(f"PROBLEM {problem.code}: {problem.detail}")
        lines.append(f"  fix: {problem.action}")
    lines.append(
        "healthy" if not found else f"unhealthy: {len(found)} problem{'s' if len(found) > 1 else ''}"
    )
    return lines


def diagnose(
    client: redis.Redis, keys: Keys, settings: Settings, portal: Portal | None, member_id: str
) -> Facts:
    facts = stored_facts(client, keys, settings, portal, member_id, failed=True)
    if portal is not None and facts.status in ("active",) and facts.oauth:
        facts = live_facts(settings, facts)
    return facts
