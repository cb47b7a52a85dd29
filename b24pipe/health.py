"""A portal's health: what stops its events, and the action that fixes each problem (pure).

A portal that stopped sending events looks like a quiet one, so `b24pipe portals doctor M`,
`portals show` (its `health` block) and `portals list` (one column) put what is known about
it side by side. `Facts` holds it: what Redis says (record, last reconciliation, last probe,
last event, parked and failed jobs) and, for the doctor, what the portal says right now
(`app.info`, `event.get`); `problems` turns it into a list of problems, each with its fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Bitrix24 drops an offline reservation (`process_id`) after about 34 days, and its events
# with it; a batch held longer than this is named well before that happens.
OFFLINE_RESERVATION_WARN = 7 * 86400.0


@dataclass(frozen=True)
class Problem:
    code: str  # short, fixed: the `portals list` column and the JSON block use it
    detail: str
    action: str


@dataclass(frozen=True)
class Facts:
    member_id: str
    status: str  # active, reauth, revoked, or pending (an install not yet verified)
    reason: str = ""
    oauth: bool = False
    webhook: bool = False
    public_url: bool = True
    reconcile_failed: bool = False  # the last reconciliation could not bind what is missing
    reconcile_error: str = ""
    last_event_at: float = 0.0
    probe_result: str = ""  # ok, missing, error, or "" (never probed)
    probe_latency: float | None = None
    probe_error: str = ""
    parked: int = 0
    failed: int = 0
    uninstall_unconfirmed: bool = False  # ONAPPUNINSTALL arrived while re-auth was needed
    offline: Mapping[str, object] | None = None  # `workers.portals.offline.status`; None: offline off
    # asked of the portal by the doctor; None when not asked
    installed: bool | None = None
    payment_expired: bool | None = None
    missing: tuple[str, ...] | None = None
    extra: tuple[str, ...] | None = None
    live_error: str = ""


def problems(f: Facts) -> list[Problem]:
    found: list[Problem] = []
    reauth_action = (
        "an admin opens the app in the portal (its install page brings new tokens), or "
        f"`b24pipe portals add --member-id {f.member_id} ... --secrets-file` with fresh OAuth tokens"
    )
    if f.status == "revoked":
        found.append(
            Problem(
                "revoked",
                f"the portal is revoked ({f.reason or 'no reason recorded'}): its events get 401",
                "install the app on the portal again, or `b24pipe portals add` with fresh tokens",
            )
        )
    elif f.status == "reauth":
        found.append(
            Problem(
                "reauth",
                "needs re-authorization: Bitrix24 refused the refresh token (invalid_grant)",
                reauth_action,
            )
        )
    if f.uninstall_unconfirmed:
        found.append(
            Problem(
                "uninstall_unconfirmed",
                "ONAPPUNINSTALL arrived while the portal needed re-authorization: nothing could "
                "confirm it, so the portal and its data are kept",
                f"if the app really was removed, `b24pipe portals purge {f.member_id}`; if not, "
                "an admin reinstalls or opens the app in the portal to bring fresh tokens",
            )
        )
    if f.status == "pending":
        found.append(
            Problem(
                "install_pending",
                "the install is not yet verified by the authorization server",
                "wait: a worker verifies it again with backoff (is B24_OAUTH_URL reachable?)",
            )
        )
    if f.status != "revoked" and not f.oauth and not f.webhook:
        found.append(
            Problem(
                "no_credentials",
                "no OAuth tokens and no inbound webhook: handlers cannot call REST",
                "`b24pipe portals add` with OAuth tokens (or install the app again)",
            )
        )
    if not f.public_url:
        found.append(
            Problem(
                "no_public_url",
                "B24PIPE_PUBLIC_URL is not set: no event is bound to the ingress",
                "set B24PIPE_PUBLIC_URL to the ingress's public base URL",
            )
        )
    if f.installed is False:
        found.append(
            Problem(
                "install_not_finished",
                "the install is not finished: Bitrix24 delivers no events until the install page "
                "calls BX24.installFinish()",
                "open the app in the portal so its install page (POST /b24/install) runs "
                "BX24.installFinish(); check the page can load //api.bitrix24.com/api/v1/",
            )
        )
    if f.payment_expired:
        found.append(
            Problem(
                "payment_expired",
                "the app's payment expired: Bitrix24 sends no events",
                "the portal renews the app's subscription",
            )
        )
    bind_action = (
        f"`b24pipe portals bind {f.member_id}` (the periodic check restores them within "
        "B24PIPE_BIND_CHECK_INTERVAL)"
    )
    if f.missing:
        found.append(Problem("bindings_missing", f"bindings missing: {', '.join(f.missing)}", bind_action))
    elif f.missing is None and f.reconcile_failed:
        why = f": {f.reconcile_error}" if f.reconcile_error else ""
        found.append(
            Problem("bindings_missing", f"the last binding reconciliation could not bind{why}", bind_action)
        )
    if f.extra:
        found.append(
            Problem(
                "bindings_extra",
                f"bindings of unhandled events at our URL: {', '.join(f.extra)}",
                bind_action,
            )
        )
    if f.live_error:
        found.append(
            Problem(
                "portal_unreachable",
                f"the portal could not be asked: {f.live_error}",
                "check the portal's REST endpoint and tokens, then run the doctor again",
            )
        )
    if f.probe_result == "missing":
        found.append(
            Problem(
                "probe_missing",
                "the last delivery probe's ONAPPTEST never arrived: Bitrix24 is not delivering",
                "fix the problems above; check Bitrix24 reaches B24PIPE_PUBLIC_URL/b24/events",
            )
        )
    elif f.probe_result == "error":
        found.append(
            Problem(
                "probe_failed",
                f"event.test failed: {f.probe_error or 'unknown error'}",
                "check the portal's REST access (scope, tokens)",
            )
        )
    found.extend(_offline_problems(f))
    if f.parked:
        found.append(
            Problem("jobs_parked", f"{f.parked} jobs parked until the portal is re-authorized", reauth_action)
        )
    if f.failed:
        found.append(
            Problem(
                "jobs_failed",
                f"{f.failed} failed jobs",
                "`b24pipe failed list`, fix the cause, then `b24pipe failed requeue`",
            )
        )
    return found


def _offline_problems(f: Facts) -> list[Problem]:
    if f.offline is None:
        return []
    found: list[Problem] = []
    oldest = f.offline.get("oldest_batch_age")
    if isinstance(oldest, (int, float)) and oldest > OFFLINE_RESERVATION_WARN:
        found.append(
            Problem(
                "offline_reservation_old",
                f"an offline batch has been held for {age(oldest)}: Bitrix24 drops a "
                "reservation (process_id) after about 34 days, and its events with it",
                "make the drain finish: fix what stops it (re-authorization, `portals doctor` "
                "problems above, workers' logs for `offline`), the next drain re-reads and "
                "clears the batch",
            )
        )
    unreadable = f.offline.get("unreadable_rows")
    if isinstance(unreadable, int) and unreadable:
        found.append(
            Problem(
                "offline_unreadable",
                f"{unreadable} offline rows could not be read as events (kept for a human)",
                f"inspect them (`LRANGE <ns>:offline:{f.member_id}:unreadable 0 -1`), then delete that list",
            )
        )
    return found


def column(found: list[Problem]) -> str:
    """The one-line health column of `portals list`."""
    return ",".join(p.code for p in found) or "ok"


def age(seconds_ago: float) -> str:
    if seconds_ago < 120:
        return f"{int(seconds_ago)} s"
    if seconds_ago < 7200:
        return f"{int(seconds_ago // 60)} min"
    if seconds_ago < 172800:
        return f"{int(seconds_ago // 3600)} h"
    return f"{int(seconds_ago // 86400)} days"
