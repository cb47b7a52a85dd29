"""The write map as a table: every default write method, built fresh (not the process-wide
DEFAULT, built once at import), with the event and entity it names; and how ids and
parameter names are read. Found by `make mutate` (workers/guards/writemap.py)."""

from __future__ import annotations

import pytest

from workers.guards.writemap import ANY_ID, Echo, WriteMap

CRM = {
    "deal": "DEAL",
    "lead": "LEAD",
    "contact": "CONTACT",
    "company": "COMPANY",
    "quote": "QUOTE",
    "activity": "ACTIVITY",
    "product": "PRODUCT",
}
TASK_UPDATES = [
    "update",
    "complete",
    "renew",
    "start",
    "pause",
    "defer",
    "delegate",
    "approve",
    "disapprove",
    "startwatch",
    "stopwatch",
]


def _table() -> dict[str, list[Echo]]:
    rows: dict[str, list[Echo]] = {}
    for obj, code in CRM.items():
        rows[f"crm.{obj}.add"] = [Echo(f"ONCRM{code}ADD", obj, ANY_ID)]
        rows[f"crm.{obj}.update"] = [Echo(f"ONCRM{code}UPDATE", obj, "5")]
        rows[f"crm.{obj}.delete"] = [Echo(f"ONCRM{code}DELETE", obj, "5")]
    for action in ("add", "update", "delete"):
        entity = ANY_ID if action == "add" else "5"
        rows[f"crm.timeline.comment.{action}"] = [
            Echo(f"ONCRMTIMELINECOMMENT{action.upper()}", "timeline_comment", entity)
        ]
        rows[f"crm.item.{action}"] = [Echo(f"ONCRMDYNAMICITEM{action.upper()}", "dynamic_128", entity)]
    rows["tasks.task.add"] = [Echo("ONTASKADD", "task", ANY_ID)]
    rows["tasks.task.delete"] = [Echo("ONTASKDELETE", "task", "5")]
    for action in TASK_UPDATES:
        rows[f"tasks.task.{action}"] = [Echo("ONTASKUPDATE", "task", "5")]
    return rows


PARAMS = {"id": 5, "taskId": 5, "entityTypeId": 128, "fields": {"TITLE": "x"}}


def test_the_default_map_is_exactly_this_table() -> None:
    fresh = WriteMap()
    table = _table()
    assert fresh.methods() == frozenset(table)
    for method, echoes in table.items():
        assert fresh.echoes(method, PARAMS) == echoes, method


@pytest.mark.parametrize(
    ("type_id", "echo"),
    [
        (2, Echo("ONCRMDEALUPDATE", "deal", "5")),
        ("1", Echo("ONCRMLEADUPDATE", "lead", "5")),
        (" 3 ", Echo("ONCRMCONTACTUPDATE", "contact", "5")),
        (4, Echo("ONCRMCOMPANYUPDATE", "company", "5")),
        (7, Echo("ONCRMQUOTEUPDATE", "quote", "5")),
        (31, Echo("ONCRMDYNAMICITEMUPDATE", "dynamic_31", "5")),
    ],
)
def test_crm_items_of_classic_types_fire_the_classic_events(type_id: object, echo: Echo) -> None:
    assert WriteMap().echoes("crm.item.update", {"entityTypeId": type_id, "id": 5}) == [echo]


@pytest.mark.parametrize(
    ("params", "entity_id"),
    [
        ({"id": 5}, "5"),
        ({"ID": "0007"}, "7"),
        ({"Id": " 12 "}, "12"),
        ({"id": "9" * 20}, "9" * 20),
        ({"id": "9" * 21}, None),
        ({"id": True}, None),
        ({"id": "5a"}, None),
        ({"id": None}, None),
        ({"id": 5.0}, None),
        ({}, None),
        ({"ID": 6, "id": 5}, "5"),  # the exact name first
    ],
)
def test_ids_are_read_as_bitrix24_reads_them(params: dict[str, object], entity_id: str | None) -> None:
    echoes = WriteMap().echoes("crm.deal.update", params)
    assert echoes == ([] if entity_id is None else [Echo("ONCRMDEALUPDATE", "deal", entity_id)])


def test_events_are_the_bounded_label_set() -> None:
    events = WriteMap().events()
    assert {"ONCRMDEALUPDATE", "ONTASKUPDATE", "ONCRMDYNAMICITEMADD", "ONCRMQUOTEDELETE"} <= events
    assert all(name.startswith("ON") and name == name.upper() for name in events)


def test_register_teaches_a_method_and_refuses_blanks() -> None:
    writes = WriteMap()
    writes.register(" Crm.Thing.Update ", " onthingupdate ", "dynamic", "id", type_param="entityTypeId")
    assert writes.echoes("crm.thing.update", {"id": 5, "entityTypeId": 31}) == [
        Echo("ONTHINGUPDATE", "dynamic_31", "5")
    ]
    for blank in (("", "E", "t"), ("m", " ", "t"), ("m", "E", "")):
        with pytest.raises(ValueError, match=r"^method, event and entity_type must be non-empty$"):
            writes.register(*blank, id_param="id")


def test_register_write_extends_the_process_wide_map(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.guards import writemap

    monkeypatch.setattr(writemap.DEFAULT, "_rules", dict(writemap.DEFAULT._rules))
    writemap.register_write("crm.requisite.update", "ONCRMREQUISITEUPDATE", "requisite", "id")
    assert writemap.DEFAULT.echoes("crm.requisite.update", {"id": 3}) == [
        Echo("ONCRMREQUISITEUPDATE", "requisite", "3")
    ]
    writemap.register_write("crm.thing.update", "ONTHINGUPDATE", "dynamic", "id", "entityTypeId")
    assert writemap.DEFAULT.echoes("crm.thing.update", {"id": 3, "entityTypeId": 2}) == [
        Echo("ONTHINGUPDATE", "deal", "3")  # a classic type id names the entity type
    ]


def test_a_map_of_given_rules_knows_only_those() -> None:
    assert WriteMap({}).methods() == frozenset() and WriteMap({}).echoes("crm.deal.update", {"id": 5}) == []


def test_a_batch_skips_unreadable_commands_and_reads_the_rest() -> None:
    cmd = {
        "a": 5,
        "b": "?id=5",  # no method: not a command
        "c": "crm.deal.update?id=",
        "d": "crm.deal.update?id=6",
        "e": "batch?cmd[x]=crm.deal.update%3Fid%3D9",  # nested batches are refused by Bitrix24
    }
    assert WriteMap().echoes("batch", {"cmd": cmd}) == [Echo("ONCRMDEALUPDATE", "deal", "6")]
    listed = [None, "crm.deal.delete?id=7"]
    assert WriteMap().echoes("batch", {"CMD": listed}) == [Echo("ONCRMDEALDELETE", "deal", "7")]
