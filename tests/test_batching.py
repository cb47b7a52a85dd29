"""Batch command strings (PHP query encoding) and the grouping batch handlers receive."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.events import Event, entity_of
from workers.batching import (
    BATCH_LIMIT,
    QueryError,
    batch_commands,
    build_query,
    collapse,
    command,
    group_for_batch,
    parse_command,
    parse_query,
)
from workers.coalesce import merge_slot, order_key


def test_build_query_is_php_http_build_query() -> None:
    params = {
        "id": 5,
        "fields": {"TITLE": "a b&c=d", "OPENED": True, "CLOSED": False, "SKIP": None,
                   "PHONE": [{"VALUE": "+7 (900)", "VALUE_TYPE": "WORK"}]},
        "empty": {},
    }  # fmt: skip
    assert build_query(params) == (
        "id=5&fields%5BTITLE%5D=a+b%26c%3Dd&fields%5BOPENED%5D=1&fields%5BCLOSED%5D=0"
        "&fields%5BPHONE%5D%5B0%5D%5BVALUE%5D=%2B7+%28900%29&fields%5BPHONE%5D%5B0%5D%5BVALUE_TYPE%5D=WORK"
    )
    assert command("crm.deal.get", {}) == "crm.deal.get"


def test_parse_query_is_php_parse_str() -> None:
    assert parse_query("a[]=1&a[]=2&b[x][y]=z+w&c=%26&&=skip&d") == {
        "a": {"0": "1", "1": "2"},
        "b": {"x": {"y": "z w"}},
        "c": "&",
        "d": "",
    }
    assert parse_query("a=1&a[b]=2") == {"a": {"b": "2"}}  # a later nested key wins, as in PHP
    with pytest.raises(QueryError, match="deeper"):
        parse_query("a" + "[x]" * 40 + "=1")


@pytest.mark.parametrize("text", ["", "?id=1", "crm deal?id=1", "a/b?x=1"])
def test_parse_command_refuses_what_is_not_a_command(text: str) -> None:
    with pytest.raises(QueryError):
        parse_command(text)


def _normal(value: Any) -> Any:
    """What PHP's parse_str gives back for what http_build_query wrote."""
    if isinstance(value, dict):
        out = {str(k): _normal(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in out.items() if v != {}}
    if isinstance(value, list):
        return _normal(dict(enumerate(value)))
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


_key = st.text(alphabet=st.characters(exclude_characters="[]&=", categories=("L", "N", "P", "S", "Zs")), min_size=1,
               max_size=8)  # fmt: skip
_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
_value = st.recursive(
    _leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_key, inner, max_size=3), max_leaves=12
)


@given(st.dictionaries(_key.filter(lambda k: k[0].isalpha()), _value, max_size=5))
def test_parse_reads_back_what_build_wrote(params: dict[str, Any]) -> None:
    assert parse_query(build_query(params)) == _normal(params)


@given(st.lists(st.dictionaries(_key.filter(lambda k: k[0].isalpha()), _value, max_size=3), max_size=130))
def test_batch_commands_chunk_by_fifty_and_keep_the_mapping(params_list: list[dict[str, Any]]) -> None:
    chunks = batch_commands("crm.deal.update", params_list)
    assert all(1 <= len(chunk) <= BATCH_LIMIT for chunk in chunks)
    assert len(chunks) == -(-len(params_list) // BATCH_LIMIT)
    merged = {key: text for chunk in chunks for key, text in chunk.items()}
    assert list(merged) == [f"c{i}" for i in range(len(params_list))]
    for index, params in enumerate(params_list):
        method, back = parse_command(merged[f"c{index}"])
        assert method == "crm.deal.update"
        assert back == _normal(params)


def test_batch_size_is_bounded() -> None:
    with pytest.raises(ValueError):
        batch_commands("crm.deal.get", [{}], size=51)


def _event(name: str, entity: int | None, ts: int, member: str = "m1", received_at: float = 0.0) -> Event:
    data = {"FIELDS": {"ID": entity}} if entity is not None else {}
    entity_type, entity_id = entity_of(name, data)
    return Event(id=f"{name}-{entity}-{ts}-{member}-{received_at}", name=name, member_id=member,
                 entity_type=entity_type, entity_id=entity_id, data=data, ts=ts, received_at=received_at)  # fmt: skip


def test_collapse_keeps_latest_update_and_every_add_delete() -> None:
    events = [
        _event("ONCRMDEALADD", 1, 10),
        _event("ONCRMDEALUPDATE", 1, 12),
        _event("ONCRMDEALUPDATE", 2, 11),
        _event("ONCRMDEALUPDATE", 1, 14),
        _event("ONCRMDEALUPDATE", 1, 13),  # reordered: older than the one before
        _event("ONAPPTEST", None, 15),
        _event("ONCRMDEALUPDATE", 1, 14, member="m2"),
        _event("ONCRMDEALDELETE", 1, 16),
        _event("ONCRMDEALDELETE", 1, 16, received_at=1.0),
    ]
    kept = collapse(events)
    assert [(e.name, e.entity_id, e.ts, e.member_id) for e in kept] == [
        ("ONCRMDEALADD", "1", 10, "m1"),
        ("ONCRMDEALUPDATE", "2", 11, "m1"),
        ("ONCRMDEALUPDATE", "1", 14, "m1"),
        ("ONAPPTEST", None, 15, "m1"),
        ("ONCRMDEALUPDATE", "1", 14, "m2"),
        ("ONCRMDEALDELETE", "1", 16, "m1"),
        ("ONCRMDEALDELETE", "1", 16, "m1"),
    ]


_events = st.lists(
    st.builds(
        _event,
        st.sampled_from(
            ["ONCRMDEALUPDATE", "ONCRMDEALADD", "ONCRMDEALDELETE", "ONCRMLEADUPDATE", "ONAPPTEST"]
        ),
        st.none() | st.integers(min_value=1, max_value=4),
        st.integers(min_value=0, max_value=5),
        st.sampled_from(["m1", "m2"]),
        st.floats(min_value=0, max_value=3, allow_nan=False),
    ),
    max_size=40,
)


@given(_events)
def test_collapse_properties(events: list[Event]) -> None:
    kept = collapse(events)
    positions = [next(i for i, e in enumerate(events) if e is k) for k in kept]
    assert positions == sorted(positions)  # a subsequence, in arrival order
    assert [e for e in events if merge_slot(e) is None] == [e for e in kept if merge_slot(e) is None]
    slots = {merge_slot(e) for e in events} - {None}
    for slot in slots:
        survivors = [e for e in kept if merge_slot(e) == slot]
        assert len(survivors) == 1
        assert order_key(survivors[0]) == max(order_key(e) for e in events if merge_slot(e) == slot)


def test_group_for_batch_per_portal_and_handler() -> None:
    events = [
        _event("ONCRMDEALUPDATE", 1, 1),
        _event("ONCRMDEALUPDATE", 1, 2, member="m2"),
        _event("ONCRMLEADUPDATE", 3, 3),
        _event("ONCRMDEALUPDATE", 1, 4),
    ]
    handlers = {"ONCRMDEALUPDATE": ["sync_deals", "audit"], "ONCRMLEADUPDATE": ["audit"]}
    groups = group_for_batch(events, lambda name: handlers.get(name, []))
    assert {slot: [(e.name, e.ts) for e in items] for slot, items in groups.items()} == {
        ("m1", "sync_deals"): [("ONCRMDEALUPDATE", 4)],
        ("m1", "audit"): [("ONCRMLEADUPDATE", 3), ("ONCRMDEALUPDATE", 4)],
        ("m2", "sync_deals"): [("ONCRMDEALUPDATE", 2)],
        ("m2", "audit"): [("ONCRMDEALUPDATE", 2)],
    }
