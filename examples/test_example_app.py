"""The example app (b24pipe/example.py) tested the way an app's own tests would be: only the
fixtures of b24pipe's pytest plugin, a simulated portal, the real ingress and worker."""

from __future__ import annotations

import pytest

from b24pipe.simportal import AppPortal

pytestmark = pytest.mark.b24pipe(handlers=["b24pipe.example"])


def test_a_persons_edit_gets_a_comment(b24_portal: AppPortal) -> None:
    deal = b24_portal.add({"TITLE": "Big deal"})
    b24_portal.edit(deal, {"TITLE": "Bigger deal"})
    b24_portal.wait_handled()
    assert b24_portal.get(deal)["COMMENTS"] == "edited by user 2"


def test_the_handlers_own_write_is_not_handled_again(b24_portal: AppPortal) -> None:
    deal = b24_portal.add({"TITLE": "Quiet deal"})
    b24_portal.edit(deal, {"TITLE": "Quiet deal, edited"})
    b24_portal.wait_handled()
    # one read and one write: the write's echo (an update by the app's user) was dropped
    requests = b24_portal.sim.stats(b24_portal.member_id)["requests"]
    assert requests.get("crm.deal.update") == 1
