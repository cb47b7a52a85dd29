"""The example app `b24pipe run` loads when no Bitrix24 app is configured (and the app the
example test in examples/ tests): whenever a person edits a deal, note in its COMMENTS who
changed it. A deal whose title contains "fail" makes the handler raise, so the demo can show
what a failing handler looks like (its traceback in the log, a retry, the failed registry).
"""

from __future__ import annotations

from workers import B24, Event, handler


class ExampleFailure(Exception):
    """What the example handler raises for a deal titled "...fail...": a bug, on purpose."""


@handler("ONCRMDEALUPDATE")
def note_deal(event: Event, b24: B24) -> None:
    deal = b24.call("crm.deal.get", {"id": event.entity_id})
    if "fail" in str(deal.get("TITLE", "")).lower():
        raise ExampleFailure(f"deal {event.entity_id} is titled {deal['TITLE']!r}")
    # only what differs is written; the write's own echo event is recognised and dropped
    b24.update_if_changed("crm.deal", event.entity_id or 0, {"COMMENTS": f"edited by user {event.user_id}"})
