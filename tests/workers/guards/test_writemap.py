"""The write map: each write names exactly the event and entity its echo will carry."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.events import entity_of
from workers.guards.writemap import ANY_ID, DEFAULT, Echo, WriteMap
from workers.rest.query import command

# (method, params, the event Bitrix24 sends back, its data)
CASES: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    ("crm.deal.update", {"id": 5, "fields": {"TITLE": "x"}}, "ONCRMDEALUPDATE", {"FIELDS": {"ID": "5"}}),
    ("crm.deal.delete", {"ID": "5"}, "ONCRMDEALDELETE", {"FIELDS": {"ID": "5"}}),
    ("crm.lead.update", {"id": "12"}, "ONCRMLEADUPDATE", {"FIELDS": {"ID": 12}}),
    ("crm.contact.update", {"id": 3}, "ONCRMCONTACTUPDATE", {"FIELDS": {"ID": "3"}}),
    ("crm.company.delete", {"id": 4}, "ONCRMCOMPANYDELETE", {"FIELDS": {"ID": "4"}}),
    ("crm.quote.update", {"id": 8}, "ONCRMQUOTEUPDATE", {"FIELDS": {"ID": "8"}}),
    ("crm.activity.update", {"id": 9}, "ONCRMACTIVITYUPDATE", {"FIELDS": {"ID": "9"}}),
    ("crm.timeline.comment.update", {"id": 2}, "ONCRMTIMELINECOMMENTUPDATE", {"FIELDS": {"ID": "2"}}),
    (
        "crm.item.update",
        {"entityTypeId": 128, "id": 7, "fields": {"title": "t"}},
        "ONCRMDYNAMICITEMUPDATE",
        {"FIELDS": {"ID": 7, "ENTITY_TYPE_ID": 128}},
    ),
    (
        "crm.item.delete",
        {"entityTypeId": "1032", "id": 1},
        "ONCRMDYNAMICITEMDELETE",
        {"FIELDS": {"ID": "1", "ENTITY_TYPE_ID": "1032"}},
    ),
    ("crm.item.update", {"entityTypeId": 2, "id": 5}, "ONCRMDEALUPDATE", {"FIELDS": {"ID": "5"}}),
    ("crm.item.update", {"entityTypeId": 1, "id": 6}, "ONCRMLEADUPDATE", {"FIELDS": {"ID": "6"}}),
    (
        "tasks.task.update",
        {"taskId": 44, "fields": {"TITLE": "t"}},
        "ONTASKUPDATE",
        {"FIELDS_BEFORE": {"ID": "44"}, "FIELDS_AFTER": {"ID": "44"}},
    ),
    ("tasks.task.complete", {"taskId": 44}, "ONTASKUPDATE", {"FIELDS_AFTER": {"ID": "44"}}),
    (
        "tasks.task.delete",
        {"taskId": 45},
        "ONTASKDELETE",
        {"FIELDS_BEFORE": {"ID": "45"}, "FIELDS": {"ID": "45"}},
    ),
]


@pytest.mark.parametrize(("method", "params", "event", "data"), CASES)
def test_echo_matches_the_incoming_event_entity(
    method: str, params: dict[str, Any], event: str, data: dict[str, Any]
) -> None:
    echoes = DEFAULT.echoes(method, params)
    assert len(echoes) == 1
    entity_type, entity_id = entity_of(event, data)
    assert echoes[0] == Echo(event, str(entity_type), str(entity_id))
    assert echoes[0].entity_key == f"{entity_type}:{entity_id}"


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("crm.deal.add", {"fields": {"TITLE": "x"}}, Echo("ONCRMDEALADD", "deal", ANY_ID)),
        (
            "crm.item.add",
            {"entityTypeId": 128, "fields": {}},
            Echo("ONCRMDYNAMICITEMADD", "dynamic_128", ANY_ID),
        ),
        ("crm.item.add", {"entityTypeId": 3, "fields": {}}, Echo("ONCRMCONTACTADD", "contact", ANY_ID)),
        ("tasks.task.add", {"fields": {"TITLE": "t"}}, Echo("ONTASKADD", "task", ANY_ID)),
    ],
)
def test_adds_are_marked_for_the_entity_type(method: str, params: dict[str, Any], expected: Echo) -> None:
    assert DEFAULT.echoes(method, params) == [expected]


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("crm.deal.get", {"id": 5}),
        ("crm.deal.list", {"filter": {"ID": 5}}),
        ("crm.deal.update", {"fields": {"TITLE": "no id"}}),
        ("crm.deal.update", {"id": "5; DROP"}),
        ("crm.deal.update", {"id": True}),
        ("crm.deal.update", {"id": "$result[a][ID]"}),
        ("crm.item.update", {"id": 5}),  # no entityTypeId: which process?
        ("tasks.task.update", {"id": 44}),  # tasks name their id taskId
        ("batch", {"cmd": "crm.deal.update?id=5"}),  # cmd must be a list or dict
    ],
)
def test_reads_and_unreadable_writes_mark_nothing(method: str, params: dict[str, Any]) -> None:
    assert DEFAULT.echoes(method, params) == []


def test_batch_marks_each_readable_command() -> None:
    cmd = {
        "a": command("crm.deal.update", {"id": 5, "fields": {"TITLE": "a&b"}}),
        "b": command("crm.deal.get", {"id": 5}),
        "c": "crm.deal.update?id=$result[a][ID]",
        "d": command("tasks.task.update", {"taskId": 9, "fields": {"TITLE": "t"}}),
        "e": command("batch", {"cmd": {"x": "crm.deal.update?id=1"}}),
        "f": "no such thing?",
        "g": 17,
    }
    assert DEFAULT.echoes("BATCH", {"cmd": cmd}) == [
        Echo("ONCRMDEALUPDATE", "deal", "5"),
        Echo("ONTASKUPDATE", "task", "9"),
    ]
    assert DEFAULT.echoes("batch", {"halt": 0, "cmd": list(cmd.values())})[0].entity_key == "deal:5"


def test_application_extends_the_map() -> None:
    writes = WriteMap()
    assert writes.echoes("crm.requisite.update", {"id": 3}) == []
    assert not writes.is_write("crm.requisite.update")
    writes.register("crm.requisite.update", "onCrmRequisiteUpdate", "requisite", "id")
    assert writes.echoes("CRM.Requisite.Update", {"id": 3}) == [
        Echo("ONCRMREQUISITEUPDATE", "requisite", "3")
    ]
    assert writes.is_write("crm.requisite.update")
    assert "ONCRMREQUISITEUPDATE" in writes.events()
    assert "ONCRMREQUISITEUPDATE" not in DEFAULT.events()  # the default map is untouched
    with pytest.raises(ValueError, match="non-empty"):
        writes.register(" ", "X", "y", "id")


def test_known_events_cover_classic_items_and_writes() -> None:
    events = DEFAULT.events()
    assert {"ONCRMDEALUPDATE", "ONCRMDYNAMICITEMUPDATE", "ONTASKUPDATE", "ONCRMCONTACTADD"} <= events
    assert DEFAULT.is_write("batch") and DEFAULT.is_write("crm.deal.update")
    assert not DEFAULT.is_write("crm.deal.get")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


@given(st.sampled_from(sorted(DEFAULT.methods())), st.dictionaries(st.text(max_size=12), _json, max_size=5))
def test_any_params_give_only_well_formed_echoes(method: str, params: dict[str, Any]) -> None:
    for echo in DEFAULT.echoes(method, params):
        assert echo.entity_id == ANY_ID or echo.entity_id.isdigit()
        assert echo.event.startswith("ON") and echo.event == echo.event.upper()


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["crm.deal.update", "crm.contact.delete", "crm.item.update", "tasks.task.update"]
            ),
            st.integers(min_value=1, max_value=10**12),
            st.integers(min_value=1, max_value=2000),
            st.text(max_size=20),
        ),
        max_size=50,
    )
)
def test_batch_echoes_equal_the_echoes_of_its_commands(calls: list[tuple[str, int, int, str]]) -> None:
    plain = []
    cmd = {}
    for index, (method, entity_id, type_id, title) in enumerate(calls):
        params = {"id": entity_id, "taskId": entity_id, "entityTypeId": type_id, "fields": {"TITLE": title}}
        plain.extend(DEFAULT.echoes(method, params))
        cmd[f"c{index}"] = command(method, params)
    assert DEFAULT.echoes("batch", {"cmd": cmd}) == plain
    assert len(plain) == len(calls)
