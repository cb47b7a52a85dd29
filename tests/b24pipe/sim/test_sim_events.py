"""Events the simulator POSTs back: shape, who acted, no retries, switches, offline events."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from b24pipe.sim.client import Installation, SimClient, SimError, SimPortal


@pytest.fixture
def portal(simulator: SimClient) -> SimPortal:
    return simulator.create_portal(drain=1000, burst=1000)


@pytest.fixture
def app(simulator: SimClient, portal: SimPortal) -> Installation:
    return simulator.install(portal.member_id)


@pytest.fixture
def sink(simulator: SimClient) -> str:
    return f"s{uuid.uuid4().hex}"


def bind(
    simulator: SimClient, portal: SimPortal, app: Installation, event: str, url: str, **extra: Any
) -> None:
    answer = simulator.rest(
        portal, "event.bind", {"event": event, "handler": url, **extra}, token=app.access_token
    )
    assert answer.body.get("result") is True, answer.body


def received(simulator: SimClient, portal: SimPortal, sink: str) -> list[dict[str, Any]]:
    simulator.wait_events(portal.member_id)
    return simulator.sink(sink)


def test_the_apps_own_write_comes_back_as_an_event(
    simulator: SimClient, portal: SimPortal, app: Installation, sink: str
) -> None:
    bind(simulator, portal, app, "ONCRMDEALUPDATE", simulator.sink_url(sink))
    deal = simulator.rest(portal, "crm.deal.add", {"fields": {"TITLE": "t"}}, token=app.access_token).body[
        "result"
    ]
    simulator.rest(portal, "crm.deal.update", {"id": deal, "fields": {"TITLE": "u"}}, token=app.access_token)
    (event,) = received(simulator, portal, sink)
    assert event["content_type"] == "application/x-www-form-urlencoded"
    form = event["form"]
    assert form["event"] == "ONCRMDEALUPDATE" and form["data"] == {"FIELDS": {"ID": str(deal)}}
    assert list(form["auth"]) == [
        "access_token",
        "expires",
        "expires_in",
        "scope",
        "domain",
        "server_endpoint",
        "status",
        "client_endpoint",
        "member_id",
        "user_id",
        "application_token",
    ]
    assert form["auth"]["user_id"] == "1" and form["auth"]["application_token"] == app.application_token
    body = event["body"]
    assert body.startswith(
        f"event=ONCRMDEALUPDATE&event_handler_id={form['event_handler_id']}"
        f"&data%5BFIELDS%5D%5BID%5D={deal}&ts="
    )
    # the token an event carries works for REST
    assert simulator.rest(portal, "user.admin", token=form["auth"]["access_token"]).status == 200


def test_person_and_robot_changes(
    simulator: SimClient, portal: SimPortal, app: Installation, sink: str
) -> None:
    bind(simulator, portal, app, "ONCRMLEADADD", simulator.sink_url(sink))
    bind(simulator, portal, app, "ONCRMLEADUPDATE", simulator.sink_url(sink))
    lead = simulator.change_entity(portal.member_id, "lead", "add", fields={"TITLE": "x"}, user_id=2)["id"]
    simulator.change_entity(portal.member_id, "lead", "update", id=lead, fields={"TITLE": "y"}, robot=True)
    person, robot = (e["form"] for e in received(simulator, portal, sink))
    assert person["event"] == "ONCRMLEADADD" and person["auth"]["user_id"] == "2"
    assert "access_token" in person["auth"]
    assert robot["event"] == "ONCRMLEADUPDATE"
    assert set(robot["auth"]) == {
        "domain",
        "server_endpoint",
        "client_endpoint",
        "member_id",
        "application_token",
    }


def test_bind_get_unbind_and_admin_only(
    simulator: SimClient, portal: SimPortal, app: Installation, sink: str
) -> None:
    url = simulator.sink_url(sink)
    bind(simulator, portal, app, "onCrmDealAdd", url)
    again = simulator.rest(
        portal, "event.bind", {"event": "ONCRMDEALADD", "handler": url}, token=app.access_token
    )
    assert again.status == 400
    listed = simulator.rest(portal, "event.get", token=app.access_token).body["result"]
    assert listed == [{"event": "ONCRMDEALADD", "handler": url, "auth_type": "0", "offline": 0}]
    user = simulator.user_tokens(portal.member_id, user_id=2)
    denied = simulator.rest(
        portal, "event.bind", {"event": "ONCRMDEALUPDATE", "handler": url}, token=user["access_token"]
    )
    assert (denied.status, denied.body["error"]) == (403, "ACCESS_DENIED")
    gone = simulator.rest(
        portal, "event.unbind", {"event": "ONCRMDEALADD", "handler": url}, token=app.access_token
    )
    assert gone.body["result"] == {"count": 1}
    simulator.rest(portal, "crm.deal.add", {"fields": {}}, token=app.access_token)
    assert received(simulator, portal, sink) == []


def test_failed_deliveries_are_never_retried(
    simulator: SimClient, portal: SimPortal, app: Installation, sink: str
) -> None:
    simulator.configure_sink(sink, status=500)
    bind(simulator, portal, app, "ONCRMDEALADD", simulator.sink_url(sink))
    bind(simulator, portal, app, "ONCRMDEALADD", "http://127.0.0.1:1/down")
    simulator.rest(portal, "crm.deal.add", {"fields": {}}, token=app.access_token)
    assert len(received(simulator, portal, sink)) == 1
    stats = simulator.stats(portal.member_id)
    assert (stats["events_sent"], stats["events_failed"]) == (0, 2)
    outcomes = sorted((d["status"] or 0, d["ok"]) for d in simulator.deliveries(portal.member_id))
    assert outcomes == [(0, False), (500, False)]


def test_reorder_and_duplicate_switches(
    simulator: SimClient, portal: SimPortal, app: Installation, sink: str
) -> None:
    bind(simulator, portal, app, "ONCRMDEALADD", simulator.sink_url(sink))
    simulator.faults(portal.member_id, event_reorder=True, reorder_window=0.3, event_duplicate=True)
    ids = [
        simulator.rest(portal, "crm.deal.add", {"fields": {}}, token=app.access_token).body["result"]
        for _ in range(3)
    ]
    arrived = [e["form"]["data"]["FIELDS"]["ID"] for e in received(simulator, portal, sink)]
    assert arrived == [str(i) for i in reversed(ids) for _ in range(2)]


def test_echo_before_answer(simulator: SimClient, portal: SimPortal, app: Installation, sink: str) -> None:
    bind(simulator, portal, app, "ONCRMDEALADD", simulator.sink_url(sink))
    simulator.faults(portal.member_id, echo_before_answer=True)
    deal = simulator.rest(portal, "crm.deal.add", {"fields": {}}, token=app.access_token).body["result"]
    # no wait: the echo is already there when the answer arrives
    assert [e["form"]["data"]["FIELDS"]["ID"] for e in simulator.sink(sink)] == [str(deal)]


def test_offline_events(simulator: SimClient, portal: SimPortal, app: Installation) -> None:
    token = app.access_token
    offline = {"event": "ONCRMDEALUPDATE", "event_type": "offline", "auth_connector": "b24pipe"}
    assert simulator.rest(portal, "event.bind", offline, token=token).body["result"] is True
    first = simulator.rest(portal, "crm.deal.add", {"fields": {}}, token=token).body["result"]
    second = simulator.rest(portal, "crm.deal.add", {"fields": {}}, token=token).body["result"]
    for _ in range(3):  # a person edits the first deal three times: one record, the latest
        simulator.change_entity(portal.member_id, "deal", "update", id=first, user_id=2)
    # the app's own write with the matching auth_connector is not queued
    simulator.rest(
        portal, "crm.deal.update", {"id": second, "fields": {}, "auth_connector": "b24pipe"}, token=token
    )
    listed = simulator.rest(portal, "event.offline.list", token=token).body["result"]
    assert [(r["EVENT_NAME"], r["EVENT_DATA"]["FIELDS"]["ID"]) for r in listed] == [
        ("ONCRMDEALUPDATE", str(first))
    ]
    # a write without the connector is queued
    simulator.rest(portal, "crm.deal.update", {"id": second, "fields": {}}, token=token)
    reserved = simulator.rest(portal, "event.offline.get", {"clear": 0, "limit": 1}, token=token).body[
        "result"
    ]
    assert len(reserved["events"]) == 1
    parallel = simulator.rest(portal, "event.offline.get", {"clear": 0}, token=token).body["result"]
    assert len(parallel["events"]) == 1 and parallel["process_id"] != reserved["process_id"]
    assert parallel["events"][0]["MESSAGE_ID"] != reserved["events"][0]["MESSAGE_ID"]
    simulator.rest(
        portal,
        "event.offline.error",
        {"process_id": parallel["process_id"], "message_id": [parallel["events"][0]["MESSAGE_ID"]]},
        token=token,
    )
    simulator.rest(portal, "event.offline.clear", {"process_id": reserved["process_id"]}, token=token)
    left = simulator.rest(portal, "event.offline.list", token=token).body["result"]
    assert [r["ERROR"] for r in left] == ["1"]
    errored = simulator.rest(portal, "event.offline.get", {"error": 1}, token=token).body["result"]["events"]
    assert len(errored) == 1
    assert simulator.rest(portal, "event.offline.list", token=token).body["result"] == []


def test_offline_extended_feature_is_licensed(simulator: SimClient) -> None:
    portal = simulator.create_portal(offline_extended=False)
    app = simulator.install(portal.member_id)
    answer = simulator.rest(portal, "event.offline.get", {"clear": 0}, token=app.access_token)
    assert (answer.status, answer.body["error"]) == (403, "WRONG_LICENSE")


def test_a_storm_of_changes_by_a_person_is_delivered_as_fast_as_accepted(
    simulator: SimClient, portal: SimPortal, app: Installation, sink: str
) -> None:
    bind(simulator, portal, app, "ONCRMDEALUPDATE", simulator.sink_url(sink))
    added = simulator.apply_changes(portal.member_id, [{"action": "add", "fields": {"TITLE": "t"}}] * 5)
    assert added["applied"] == 5 and added["deliveries"] == 0  # ONCRMDEALADD is not bound
    ids = added["ids"]
    storm = [{"id": ids[i % 5], "fields": {"TITLE": f"v{i}"}} for i in range(40)]
    answer = simulator.apply_changes(portal.member_id, storm, user_id=2, concurrency=8)
    assert answer["deliveries"] == 40 and answer["statuses"] == {"200": 40}
    forms = [event["form"] for event in simulator.sink(sink)]
    assert len(forms) == 40 and {f["auth"]["user_id"] for f in forms} == {"2"}
    assert sorted(int(f["data"]["FIELDS"]["ID"]) for f in forms) == sorted(ids[i % 5] for i in range(40))
    deal = simulator.rest(portal, "crm.deal.get", {"id": ids[4]}, token=app.access_token).body["result"]
    assert deal["TITLE"] == "v39"  # applied in order
    first = {"id": ids[0], "fields": {"TITLE": "no"}}
    for bad in ([first, {"action": "update", "id": 999999}], [first, {"action": "merge", "id": ids[0]}], []):
        with pytest.raises(SimError) as refused:
            simulator.apply_changes(portal.member_id, bad)
        assert refused.value.status == 400
    deal = simulator.rest(portal, "crm.deal.get", {"id": ids[0]}, token=app.access_token).body["result"]
    assert deal["TITLE"] == "v35"  # a refused call changes nothing


def test_offline_queue_traps(simulator: SimClient, portal: SimPortal, app: Installation) -> None:
    """The semantics bitrix24.md §8 lists, each of which a consumer must survive."""
    token = app.access_token

    def rest(method: str, params: dict[str, Any] | None = None) -> Any:
        answer = simulator.rest(portal, method, params or {}, token=token)
        assert answer.status == 200, answer.body
        return answer.body["result"]

    rest("event.bind", {"event": "ONCRMDEALUPDATE", "event_type": "offline"})
    deals = [rest("crm.deal.add", {"fields": {}}) for _ in range(3)]

    def touch(deal: int) -> None:
        simulator.change_entity(portal.member_id, "deal", "update", id=deal, user_id=2)

    for deal in deals:
        touch(deal)
    touch(deals[0])  # merged into the deal's row: still one row per object
    rows = rest("event.offline.list")
    assert len(rows) == 3 and len({r["MESSAGE_ID"] for r in rows}) == 3

    reserved = rest("event.offline.get", {"clear": 0, "limit": 2})
    assert len(reserved["events"]) == 2
    touch(int(reserved["events"][0]["EVENT_DATA"]["FIELDS"]["ID"]))  # changed while reserved: a new row
    assert len(rest("event.offline.list")) == 4
    again = rest("event.offline.get", {"process_id": reserved["process_id"], "clear": 0})
    assert [e["ID"] for e in again["events"]] == [e["ID"] for e in reserved["events"]]
    # the trap: a process_id without clear=0 reads the batch and deletes it
    rest("event.offline.get", {"process_id": reserved["process_id"]})
    assert len(rest("event.offline.list")) == 2
    # clear defaults to 1: a plain read deletes what it returns
    assert len(rest("event.offline.get")["events"]) == 2
    assert rest("event.offline.list") == []


def test_offline_reservations_expire_and_the_doorbell_is_throttled(
    simulator: SimClient, portal: SimPortal, app: Installation, sink: str
) -> None:
    token = app.access_token
    bind(simulator, portal, app, "ONOFFLINEEVENT", simulator.sink_url(sink), options={"minTimeout": 1})
    simulator.rest(portal, "event.bind", {"event": "ONCRMDEALUPDATE", "event_type": "offline"}, token=token)
    simulator.freeze_clock(portal.member_id)
    deal = simulator.rest(portal, "crm.deal.add", {"fields": {}}, token=token).body["result"]
    for _ in range(3):
        simulator.change_entity(portal.member_id, "deal", "update", id=deal, user_id=2)
    simulator.wait_events(portal.member_id)
    rings = [e for e in received(simulator, portal, sink) if e["form"]["event"] == "ONOFFLINEEVENT"]
    assert len(rings) == 1 and rings[0]["form"]["auth"]["refresh_token"]  # minTimeout=1, clock frozen
    simulator.rest(portal, "event.offline.get", {"clear": 0}, token=token)
    simulator.advance_clock(portal.member_id, 35 * 86400)
    token = simulator.user_tokens(portal.member_id, 1)["access_token"]  # the old one expired too
    assert simulator.rest(portal, "event.offline.list", token=token).body["result"] == []
    feature = simulator.rest(portal, "feature.get", {"CODE": "rest_offline_extended"}, token=token)
    assert feature.body["result"] == {"value": "Y"}
