"""Batch command strings (PHP query encoding) and batch answers in both of PHP's JSON shapes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.rest.query import QueryError, build_query, command, parse_command, parse_query
from workers.rest.transport import php_keyed


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


def test_batch_answers_read_the_same_as_a_php_list_or_object() -> None:
    """PHP's json_encode: keys exactly 0..n-1 -> a list, any other keys -> an object, empty -> []."""
    assert php_keyed([{"ID": "1"}, {"ID": "2"}]) == {"0": {"ID": "1"}, "1": {"ID": "2"}}
    assert php_keyed({"0": {"ID": "1"}, "2": {"ID": "3"}}) == {"0": {"ID": "1"}, "2": {"ID": "3"}}
    assert php_keyed({"c0": True}) == {"c0": True}
    assert php_keyed([]) == {} and php_keyed(None) == {}
