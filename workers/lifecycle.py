"""The RQ entry points of the portal jobs, at the paths queued jobs store (`shared.jobs`).

RQ keeps a job's function as a dotted path in Redis, so these names are a contract with
every job already queued: they never move. Each is a thin call into `workers.portals`,
where the work is. Paths an earlier release queued (`workers.binding.reconcile`, ...) are
mapped to these by `shared.jobs.LEGACY_PATHS` when the runner loads a job's function.
"""

from __future__ import annotations

from typing import Any


def reverify_install(member_id: str, attempt: int = 1, token_digest: str = "") -> str:
    """Verify a pending install again (`workers.portals.lifecycle`)."""
    from workers.portals import lifecycle

    return lifecycle.reverify_install(member_id, attempt, token_digest)


def confirm_uninstall(event_dict: dict[str, Any], attempt: int = 1) -> str:
    """Act on an ONAPPUNINSTALL once Bitrix24 confirms it (`workers.portals.lifecycle`)."""
    from workers.portals import lifecycle

    return lifecycle.confirm_uninstall(event_dict, attempt)


def reconcile_bindings(member_id: str, reason: str = "") -> str:
    """Make one portal's event bindings match the handlers (`workers.portals.binding`)."""
    from workers.portals import binding

    return binding.reconcile(member_id, reason)


def drain_offline(member_id: str) -> str:
    """Drain one portal's offline queue (`workers.portals.offline`)."""
    from workers.portals import offline

    return offline.drain(member_id)


def send_probe(member_id: str) -> str:
    """Settle the previous delivery probe and send a new one (`workers.portals.probe`)."""
    from workers.portals import probe

    return probe.send(member_id)
