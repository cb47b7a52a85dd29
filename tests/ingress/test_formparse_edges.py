"""The body parser at its edges: exact bounds, PHP's integer keys and appends, each charset
path, and the exact error details (they reach the sender as the answer's description).

Found by `make mutate`: each case here kills mutants the examples and properties of
tests/ingress/test_formparse.py let through."""

from __future__ import annotations

from typing import Any

import pytest

from ingress import formparse
from ingress.formparse import FormError, media_type, parse_body, parse_form, parse_json

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
INT_MIN = "-9223372036854775808"


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    formparse._short_name.cache_clear()
    formparse._plan.cache_clear()
    media_type.cache_clear()


def form(
    body: str | bytes, charset: str = "utf-8", max_keys: int = 1000, max_depth: int = 8
) -> dict[str, Any]:
    raw = body.encode() if isinstance(body, str) else body
    return parse_form(raw, max_keys=max_keys, max_depth=max_depth, charset=charset)


def detail(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(FormError) as caught:
        call(*args, **kwargs)
    return caught.value.detail


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # PHP >= 8.3: an append after negative keys goes one past the largest of them
        ("a[-5]=x&a[]=y", {"a": {"-5": "x", "-4": "y"}}),
        (f"a[{INT_MIN}]=x&a[]=y", {"a": {INT_MIN: "x", "-9223372036854775807": "y"}}),
        ("a[-9223372036854775809]=x&a[]=y", {"a": {"-9223372036854775809": "x", "0": "y"}}),
        ("a[]=x&a[1]=y&a[]=z", {"a": ["x", "y", "z"]}),  # an explicit index moves the next append
        ("a[]=x&a[b]=y", {"a": {"0": "x", "b": "y"}}),
        ("a[][x]=1&a[][x]=2", {"a": [{"x": "1"}, {"x": "2"}]}),
        ("a[x][]=1&a[x][]=2&a[x]=s&a[y][]=z", {"a": {"x": "s", "y": ["z"]}}),
        (" a=1&+b=2& X=3", {"a": "1", "b": "2", "X": "3"}),
        ("a =1", {"a_": "1"}),
        ("%09a+b=1", {"\ta_b": "1"}),  # only leading spaces are dropped, not other whitespace
        ("a b=1&c.d=2", {"a_b": "1", "c_d": "2"}),
        ("[a]=1&[]=2", {}),
        ("a[b=1&c[=2", {"a_b": "1", "c_": "2"}),
        ("a%3db=1&c%3Dd=2&e%26f=3", {"a=b": "1", "c=d": "2", "e&f": "3"}),
        ("a%3db=1", {"a=b": "1"}),  # a lowercase escape alone still splits on the raw `=`
        ("a" * 200 + "[x]=1", {"a" * 200: {"x": "1"}}),  # past the name cache
    ],
)
def test_php_keys(body: str, expected: dict[str, Any]) -> None:
    assert form(body) == expected


def test_append_after_the_largest_integer_key_never_wraps_to_zero() -> None:
    """PHP drops this append (the next index would overflow); we must never file it at 0."""
    parsed = form("a[9223372036854775807]=x&a[]=y")["a"]
    assert parsed["9223372036854775807"] == "x" and "0" not in parsed


def test_arrays_replaced_by_a_scalar_lend_their_next_index_to_no_new_array() -> None:
    """Replaced arrays are freed while the form is built; a new array could then get one's
    id() and with it that array's next append index (`n0[]` landing at 3 instead of 0)."""
    names = [f"n{i}" for i in range(20)]
    replaced = "&".join(f"x[a][k{i}][]=1&x[a][k{i}][]=2&x[a][k{i}][]=3" for i in range(20))
    fresh = "&".join(f"x[{name}][]=z" for name in names)
    parsed = form(f"{replaced}&x[a]=s&{fresh}", max_keys=100)
    assert parsed == {"x": {"a": "s", **{name: ["z"] for name in names}}}


def test_other_charsets_decode_each_field_alone() -> None:
    assert form(b"a=x+y%E9&b=c=d&e", charset="latin-1") == {"a": "x y\u00e9", "b": "c=d", "e": ""}
    assert parse_body(b"a=b=c&d=1", FORM, "latin-1", max_keys=2, max_depth=2) == {"a": "b=c", "d": "1"}
    assert detail(form, b"a=%FF", charset="ascii") == "form field is not valid ascii"
    assert detail(form, b"a=1&b=2&c=3", charset="latin-1", max_keys=2) == "form has more than 2 fields"


def test_the_fallback_decoder_without_yarl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formparse, "_fast_unquote", None)
    assert form("a%5Bb%5D=%C3%A9+x&c=%2B") == {"a": {"b": "\u00e9 x"}, "c": "+"}
    assert detail(form, b"a%26=%C3%28") == "form field is not valid utf-8"


@pytest.mark.parametrize("max_keys", [1, 2, 5])
def test_form_field_count_bound_is_exact(max_keys: int) -> None:
    fields = [f"k{i}=1" for i in range(max_keys + 1)]
    assert len(form("&".join(fields[:max_keys]), max_keys=max_keys)) == max_keys
    too_many = "&".join(fields)
    assert detail(form, too_many, max_keys=max_keys) == f"form has more than {max_keys} fields"
    assert len(form("&".join(fields[:max_keys]), charset="latin-1", max_keys=max_keys)) == max_keys


@pytest.mark.parametrize(
    ("body", "charset", "message"),
    [
        (b"a=%zz", None, "form body has an invalid percent-escape"),
        (b"a=\xff", None, "form body is not valid utf-8"),
        (b"a=\xff", "UTF-8", "form body is not valid utf-8"),
        (b"a=%C3%28", None, "form field is not valid utf-8"),
        (b"a%00b=1", None, "form field name contains a NUL byte"),
        (b"a[1][2][3]=1", None, "form nesting is deeper than 2 levels"),
        (b"a=1", "x-no-such", "unsupported charset 'x-no-such'"),
        (b"a=1", "x" * 50, f"unsupported charset {'x' * 40!r}"),
    ],
)
def test_form_error_details(body: bytes, charset: str | None, message: str) -> None:
    assert detail(parse_body, body, FORM, charset, max_keys=10, max_depth=2) == message


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [("text/plain", "'text/plain'"), ("", "'none'"), ("t/" + "x" * 80, repr("t/" + "x" * 58))],
)
def test_unsupported_content_type_detail(content_type: str, shown: str) -> None:
    with pytest.raises(FormError) as caught:
        parse_body(b"a=1", content_type, None, max_keys=10, max_depth=2)
    assert caught.value.code == "unsupported_media_type"
    assert caught.value.detail == f"content type {shown} is not supported; use {FORM} or {JSON}"


def test_json_through_parse_body_and_its_charsets() -> None:
    assert parse_body(b'{"a":"1"}', JSON, None, max_keys=1, max_depth=1) == {"a": "1"}
    assert parse_body('{"a":"\u00e9"}'.encode("latin-1"), JSON, "latin-1", max_keys=1, max_depth=1) == {
        "a": "\u00e9"
    }
    assert detail(parse_json, b'{"a":"\xff"}', max_keys=1, max_depth=1, charset="ascii") == (
        "JSON body is not valid ascii"
    )
    for charset in ("utf-8", "utf8"):  # orjson reads UTF-8 itself: its error, with the position
        assert detail(parse_json, b'{"a":"\xff"}', max_keys=1, max_depth=1, charset=charset).startswith(
            "JSON body is malformed at position"
        )
    assert detail(parse_json, b"[1]", max_keys=1, max_depth=1) == "JSON body must be an object"


@pytest.mark.parametrize("max_keys", [1, 2, 3])
def test_json_value_count_bound_is_exact(max_keys: int) -> None:
    values = ",".join(f'"k{i}":{i}' for i in range(max_keys))
    assert len(parse_json(f"{{{values}}}".encode(), max_keys=max_keys, max_depth=1)) == max_keys
    more = values + ',"extra":0'
    assert detail(parse_json, f"{{{more}}}".encode(), max_keys=max_keys, max_depth=1) == (
        f"JSON body has more than {max_keys} values"
    )


def test_json_depth_bound_counts_only_levels_with_content() -> None:
    assert parse_json(b'{"a":{},"b":[]}', max_keys=5, max_depth=1) == {"a": {}, "b": []}
    assert (
        detail(parse_json, b'{"a":{"b":1}}', max_keys=5, max_depth=1)
        == "JSON nesting is deeper than 1 levels"
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/json", ("application/json", None)),
        ("Application/JSON; charset=koi8-r", ("application/json", "koi8-r")),
        ("application/json;", ("application/json", None)),
        ("text", ("application/octet-stream", None)),
        ("a/b/c", ("application/octet-stream", None)),
        (None, ("application/octet-stream", None)),
    ],
)
def test_media_type(header: str | None, expected: tuple[str, str | None]) -> None:
    assert media_type(header) == expected


def test_bodies_with_the_same_names_share_a_shape_not_their_values() -> None:
    """The second body is filled into the shape the first one built; neither result is the
    other's, and a body past the planned size gives what the plan would."""
    first = form("event=A&data[FIELDS][ID]=1&data[list][]=x&data[list][]=y&auth[member_id]=m1")
    second = form("event=B&data[FIELDS][ID]=2&data[list][]=z&data[list][]=w&auth[member_id]=m2")
    assert first == {
        "event": "A",
        "data": {"FIELDS": {"ID": "1"}, "list": ["x", "y"]},
        "auth": {"member_id": "m1"},
    }
    assert second == {
        "event": "B",
        "data": {"FIELDS": {"ID": "2"}, "list": ["z", "w"]},
        "auth": {"member_id": "m2"},
    }
    second["data"]["FIELDS"]["ID"] = "changed"
    assert form("event=A&data[FIELDS][ID]=1&data[list][]=x&data[list][]=y&auth[member_id]=m1") == first
    padding = "p=" + "x" * formparse._PLANNED_BODY
    large = form(f"event=A&data[FIELDS][ID]=1&{padding}")
    assert large == {"event": "A", "data": {"FIELDS": {"ID": "1"}}, "p": "x" * formparse._PLANNED_BODY}
    # a large body decoded in one pass is not decoded again: `%2541` is the text `%41`
    assert form(f"a=100%25&b=%2541&{padding}")["b"] == "%41"
