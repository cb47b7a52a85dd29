"""`b24pipe.health.problems` (pure): each fact that stops a portal's events is one problem
with a fixed code and the action that fixes it; a healthy portal has none."""

from __future__ import annotations

import re
from pathlib import Path

from b24pipe.health import Facts, column, problems

HEALTHY = Facts(
    member_id="m1", status="active", oauth=True, installed=True, payment_expired=False, missing=()
)


def _offline(**state: object) -> dict[str, object]:
    """A `workers.portals.offline.status` answer: nothing held, nothing unreadable, unless given."""
    return {
        "reservations": "yes",
        "backlog": 0,
        "batches_held": 0,
        "oldest_batch_age": None,
        "unreadable_rows": 0,
    } | state


def _codes(facts: Facts) -> list[str]:
    return [p.code for p in problems(facts)]


def test_a_healthy_portal_has_no_problem() -> None:
    assert problems(HEALTHY) == [] and column([]) == "ok"
    assert problems(Facts(member_id="m1", status="active", webhook=True)) == []  # nothing asked: no problem


def test_each_fact_is_one_problem_with_its_fix() -> None:
    cases = {
        "revoked": Facts(member_id="m1", status="revoked", reason="purged"),
        "reauth": Facts(member_id="m1", status="reauth", oauth=True),
        "install_pending": Facts(member_id="m1", status="pending", oauth=True),
        "no_credentials": Facts(member_id="m1", status="active"),
        "no_public_url": Facts(member_id="m1", status="active", oauth=True, public_url=False),
        "install_not_finished": Facts(member_id="m1", status="active", oauth=True, installed=False),
        "payment_expired": Facts(member_id="m1", status="active", oauth=True, payment_expired=True),
        "bindings_missing": Facts(member_id="m1", status="active", oauth=True, missing=("ONAPPTEST",)),
        "bindings_extra": Facts(member_id="m1", status="active", oauth=True, extra=("ONCRMLEADADD",)),
        "portal_unreachable": Facts(member_id="m1", status="active", oauth=True, live_error="ApiError"),
        "probe_missing": Facts(member_id="m1", status="active", oauth=True, probe_result="missing"),
        "probe_failed": Facts(member_id="m1", status="active", oauth=True, probe_result="error"),
        "uninstall_unconfirmed": Facts(
            member_id="m1", status="active", oauth=True, uninstall_unconfirmed=True
        ),
        "offline_reservation_old": Facts(
            member_id="m1", status="active", oauth=True, offline=_offline(oldest_batch_age=8 * 86400.0)
        ),
        "offline_unreadable": Facts(
            member_id="m1", status="active", oauth=True, offline=_offline(unreadable_rows=2)
        ),
        "jobs_parked": Facts(member_id="m1", status="active", oauth=True, parked=3),
        "jobs_failed": Facts(member_id="m1", status="active", oauth=True, failed=2),
    }
    for code, facts in cases.items():
        assert _codes(facts) == [code], (code, _codes(facts))
        assert all(p.action for p in problems(facts))
    # without asking the portal, a failed reconciliation still names the missing bindings
    stored = Facts(
        member_id="m1", status="active", oauth=True, reconcile_failed=True, reconcile_error="ACCESS_DENIED"
    )
    assert _codes(stored) == ["bindings_missing"] and "ACCESS_DENIED" in problems(stored)[0].detail
    several = Facts(member_id="m1", status="reauth", oauth=True, parked=2)
    assert column(problems(several)) == "reauth,jobs_parked"
    # the README lists exactly these codes
    readme = Path(__file__).resolve().parents[2].joinpath("README.md").read_text()
    listed = re.search(r"codes: (`revoked`.*?`jobs_failed`)", readme, re.DOTALL)
    assert listed is not None
    assert re.findall(r"`([a-z_]+)`", listed.group(1)) == list(cases)


def test_offline_batches_are_named_well_before_bitrix24_drops_them() -> None:
    def codes(**state: object) -> list[str]:
        return _codes(Facts(member_id="m1", status="active", oauth=True, offline=_offline(**state)))

    assert codes() == [] and codes(oldest_batch_age=6 * 86400.0, batches_held=1) == []
    old = Facts(member_id="m1", status="active", oauth=True, offline=_offline(oldest_batch_age=9 * 86400.0))
    assert _codes(old) == ["offline_reservation_old"] and "9 days" in problems(old)[0].detail
    both = codes(oldest_batch_age=30 * 86400.0, unreadable_rows=1)
    assert both == ["offline_reservation_old", "offline_unreadable"]


def test_an_unconfirmed_uninstall_names_purge_and_reinstall() -> None:
    facts = Facts(member_id="m7", status="reauth", oauth=True, uninstall_unconfirmed=True)
    found = problems(facts)
    assert [p.code for p in found] == ["reauth", "uninstall_unconfirmed"]
    assert "`b24pipe portals purge m7`" in found[1].action and "reinstalls" in found[1].action
