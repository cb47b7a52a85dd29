"""The event body parser: PHP's reading of bracket forms, JSON, and its bounds."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingress import formparse
from ingress.formparse import FormError, media_type, parse_body, parse_form, parse_json
from tests.support.propcoverage import branch, reaches

FORM = "application/x-www-form-urlencoded"


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    """The parser caches decoded names, shapes and Content-Type headers for the life of the process:
    clear them, so every test runs the decoding it names instead of an earlier test's answer."""
    formparse._short_name.cache_clear()
    formparse._plan.cache_clear()
    formparse._shapes.clear()
    media_type.cache_clear()


def form(body: str | bytes, **bounds: int) -> dict[str, Any]:
    raw = body.encode() if isinstance(body, str) else body
    return parse_form(raw, max_keys=bounds.get("max_keys", 1000), max_depth=bounds.get("max_depth", 8))


# --- a reference encoder: PHP's http_build_query (PHP_QUERY_RFC1738) ----------------------
def http_build_query(data: dict[str, Any] | list[Any], prefix: str | None = None) -> str:
    items = data.items() if isinstance(data, dict) else enumerate(data)
    parts: list[str] = []
    for key, value in items:
        name = (
            quote_plus(str(key), safe="")
            if prefix is None
            else f"{prefix}%5B{quote_plus(str(key), safe='')}%5D"
        )
        if isinstance(value, dict | list):
            encoded = http_build_query(value, name)
            if encoded:
                parts.append(encoded)
        elif value is None:
            continue
        elif isinstance(value, bool):
            parts.append(f"{name}={int(value)}")
        else:
            parts.append(f"{name}={quote_plus(str(value), safe='')}")
    return "&".join(parts)


def php_view(data: Any) -> Any:
    """What PHP's $_POST then json_encode make of `data` after http_build_query."""
    if isinstance(data, dict | list):
        pairs = data.items() if isinstance(data, dict) else enumerate(data)
        out = {str(k): php_view(v) for k, v in pairs if v is not None}
        out = {k: v for k, v in out.items() if v not in ({}, [])}
        if out and all(key == str(i) for i, key in enumerate(out)):
            return list(out.values())
        return out
    if isinstance(data, bool):
        return str(int(data))
    return str(data)


# --- examples ------------------------------------------------------------------------------
def test_bitrix24_event_with_percent_encoded_brackets() -> None:
    body = "event=ONCRMDEALUPDATE&event_handler_id=201&data%5BFIELDS%5D%5BID%5D=759&ts=1736405807&auth%5Bmember_id%5D=abc"
    assert form(body) == {
        "event": "ONCRMDEALUPDATE",
        "event_handler_id": "201",
        "data": {"FIELDS": {"ID": "759"}},
        "ts": "1736405807",
        "auth": {"member_id": "abc"},
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("a[]=x&a[]=y", {"a": ["x", "y"]}),
        ("a[5]=x&a[]=y", {"a": {"5": "x", "6": "y"}}),
        ("a[x][]=1&a[x][7]=2&a[x][]=3", {"a": {"x": {"0": "1", "7": "2", "8": "3"}}}),
        ("a=1&a=2", {"a": "2"}),
        ("a=1&a[b]=2", {"a": {"b": "2"}}),
        ("a[b]=1&a=2", {"a": "2"}),
        ("a[b]=1&a[b][c]=2", {"a": {"b": {"c": "2"}}}),
        ("a.b c=1", {"a_b_c": "1"}),
        ("+a=1", {"a": "1"}),
        ("a[b.c]=1", {"a": {"b.c": "1"}}),
        ("a[b=1", {"a_b": "1"}),
        ("a[b][c=1", {"a": {"b": "1"}}),
        ("a[b]x=1", {"a": {"b": "1"}}),
        ("a[b[c]]=1", {"a": {"b[c": "1"}}),
        ("a[ ]=1&a[ ]=2", {"a": ["1", "2"]}),
        ("=1&[x]=2&b", {"b": ""}),
        ("a=x+y%2B%26%3D", {"a": "x y+&="}),
        ("a=%D0%BF%D1%80%D0%B8", {"a": "при"}),
        ("m[0]=a&m[1]=b", {"m": ["a", "b"]}),
        ("m[1]=a&m[0]=b", {"m": {"1": "a", "0": "b"}}),
        ("&&a=1&&", {"a": "1"}),
    ],
)
def test_php_rules(body: str, expected: dict[str, Any]) -> None:
    assert form(body) == expected


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"a=%zz", "invalid percent-escape"),
        (b"a=%C3%28", "not valid utf-8"),
        (b"a=\xff", "not valid utf-8"),
        (b"a%00b=1", "NUL"),
        (b"a[1][2][3][4][5][6][7][8]=1", "deeper than 8"),
        (b"&".join(b"k%d=1" % i for i in range(1001)), "more than 1000 fields"),
    ],
)
def test_malformed_forms_raise_form_error(body: bytes, detail: str) -> None:
    with pytest.raises(FormError, match=detail) as caught:
        form(body)
    assert caught.value.code == "invalid_request"


def test_json_body_and_bounds() -> None:
    assert parse_json(b'{"event":"X","data":{"FIELDS":{"ID":5}}}', max_keys=10, max_depth=3) == {
        "event": "X",
        "data": {"FIELDS": {"ID": 5}},
    }
    with pytest.raises(FormError, match="deeper"):
        parse_json(b'{"a":{"b":{"c":{"d":1}}}}', max_keys=10, max_depth=3)
    with pytest.raises(FormError, match="more than 3"):
        parse_json(b'{"a":[1,2,3,4]}', max_keys=3, max_depth=3)
    with pytest.raises(FormError, match="must be an object"):
        parse_json(b"[1]", max_keys=3, max_depth=3)
    with pytest.raises(FormError, match="malformed"):
        parse_json(b'{"a":', max_keys=3, max_depth=3)


def test_content_types_and_charsets() -> None:
    assert parse_body(b"a=1", FORM, "UTF-8", max_keys=10, max_depth=4) == {"a": "1"}
    assert parse_body(b"a=%E9", FORM, "latin-1", max_keys=10, max_depth=4) == {"a": "é"}
    with pytest.raises(FormError) as caught:
        parse_body(b"a=1", "text/plain", None, max_keys=10, max_depth=4)
    assert caught.value.code == "unsupported_media_type"
    with pytest.raises(FormError) as caught:
        parse_body(b"a=1", FORM, "no-such-charset", max_keys=10, max_depth=4)
    assert caught.value.code == "unsupported_media_type"


# --- properties ----------------------------------------------------------------------------
_text = st.text(st.characters(codec="utf-8"), max_size=12)
_top_key = st.text(st.characters(codec="utf-8", exclude_characters=" .[]\x00"), min_size=1, max_size=8)
_inner_key = st.text(st.characters(codec="utf-8", exclude_characters="]\x00"), min_size=1, max_size=8).filter(
    lambda key: key != " "
)
_leaf = st.one_of(_text, st.integers(), st.booleans(), st.none())
_tree = st.recursive(
    _leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(_inner_key, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_top_key, _tree, max_size=6))
def test_decodes_what_http_build_query_produces(data: dict[str, Any]) -> None:
    encoded = http_build_query(data)
    expected = php_view(data)
    if isinstance(expected, list):  # the top level is always an object (the request's fields)
        expected = {str(i): v for i, v in enumerate(expected)}
    assert form(encoded) == expected


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("a=1&b[c]=2", "a=x&b[c]=y"),  # the names known: the short way
        ("a=1&b=2", "a=1&b"),  # a pair without `=`: fewer values than pairs
        ("a=1&b=2", "a&b=2"),
        ("=1&b=2", "&b=2"),  # an empty name, then an empty pair
        ("a=1&b=2", "a=1=2&b=3"),  # `=` in a value
        ("a=1&&b=2", "a=1&=x&b"),  # an empty pair: never recorded (the same names, cut)
        ("a=1&b", "a=1&b=2"),  # a pair without `=` recorded: its name is all of it
        ("a[]=1&a[]=2", "a[]=3&a[]=4&a[]=5"),
        ("a%5Bb%5D=1&c=%26", "a%5Bb%5D=2&c=3"),  # an escaped `&`: decoded pair by pair
    ],
)
def test_a_body_with_known_names_reads_as_the_first_time(first: str, second: str) -> None:
    form(first)  # its names are now known
    known = form(second)
    formparse._shapes.clear()
    formparse._plan.cache_clear()
    assert known == form(second)


def test_known_names_keep_the_bounds_and_a_bounded_memory() -> None:
    form("a=1&b=2&c=3")
    with pytest.raises(FormError, match="more than 2 fields"):
        form("a=4&b=5&c=6", max_keys=2)
    for n in range(formparse._MAX_SHAPES * 2):
        form(f"n{n}=1")
        assert 0 < len(formparse._shapes) <= formparse._MAX_SHAPES


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_top_key, _tree, max_size=6), st.lists(_text, min_size=30, max_size=30))
def test_known_names_with_other_values_read_the_long_way(data: dict[str, Any], values: list[str]) -> None:
    first = http_build_query(data)
    names = [pair.partition("=")[0] for pair in first.split("&")]
    second = "&".join(
        f"{name}={quote_plus(value, safe='')}" for name, value in zip(names, values, strict=False)
    )
    form(first)
    known = form(second)
    formparse._shapes.clear()
    assert known == form(second)


@reaches(parsed=0.05, refused=0.05)
@settings(max_examples=500, deadline=None)
@given(
    st.binary(max_size=300) | st.text(alphabet="a[]=&%+5BDx0.", max_size=60).map(str.encode),
    st.sampled_from([FORM, "application/json", "text/plain", ""]),
    st.sampled_from([None, "utf-8", "latin-1", "bogus"]),
)
def test_only_form_error_escapes(body: bytes, content_type: str, charset: str | None) -> None:
    try:
        result = parse_body(body, content_type, charset, max_keys=20, max_depth=4)
    except FormError:
        branch("refused")
        return
    assert isinstance(result, dict)
    branch("parsed")


@pytest.mark.parametrize(
    "header",
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=UTF-8",
        'Application/JSON;charset="utf-8"',
        " application/json ; charset=koi8-r; x=1",
        "application/json; charset",
        "text/plain",
        "",
        "garbage",
        "a/b/c",
    ],
)
def test_media_type_reads_a_header_as_aiohttp_does(header: str) -> None:
    from aiohttp.helpers import parse_content_type

    media, params = parse_content_type(header)
    assert media_type(header) == (media, params.get("charset"))
