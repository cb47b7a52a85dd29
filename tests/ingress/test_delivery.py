"""A delivery's queued form: built by hand on the hot path, held equal to the model's."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingress.delivery import Delivery, Plain
from shared.events import Event
from tests.support.propcoverage import branch, reaches

_text = st.text(max_size=12)
# what the form and JSON parsers can produce (orjson reads larger integers as floats)
_leaf = st.one_of(
    _text,
    st.integers(-(2**63), 2**64 - 1),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
)
_data = st.recursive(
    _leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3), max_leaves=8
)
_event_names = st.sampled_from(
    ["ONCRMDEALUPDATE", "onCrmDealAdd", "ONTASKUPDATE", "ONCRMDYNAMICITEMUPDATE", "ONAPPUNINSTALL", "ONX"]
)


@st.composite
def _payloads(draw: st.DrawFn) -> dict[str, Any]:
    auth: dict[str, Any] = {"member_id": draw(st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True))}
    for name, value in (
        ("application_token", _text),
        ("domain", _text),
        ("user_id", st.one_of(st.integers(0, 10**6), st.just(""), st.none())),
        ("access_token", _text),
    ):
        if draw(st.booleans()):
            auth[name] = draw(value)
    fields = draw(st.dictionaries(st.sampled_from(["ID", "ENTITY_TYPE_ID", "X"]), _leaf | _text, max_size=3))
    payload: dict[str, Any] = {
        "event": draw(_event_names),
        "data": draw(st.one_of(st.just({"FIELDS": fields}), st.just({"FIELDS_AFTER": fields}), _data)),
        "auth": auth,
    }
    if draw(st.booleans()):
        payload["ts"] = draw(st.one_of(st.integers(0, 2**40), st.just("")))
    if draw(st.booleans()):
        payload["event_handler_id"] = draw(st.one_of(st.integers(1, 999), st.just(""), _text))
    return payload


@reaches(delivery=0.2)
@given(_payloads())
def test_queued_form_is_the_models_dump(payload: dict[str, Any]) -> None:
    try:
        delivery = Delivery.model_validate(payload)
    except ValueError:
        return  # not a delivery: the ingress answers 400 before building anything
    branch("delivery")
    queued = delivery.queued_form(received_at=1.5)
    assert queued == Event.model_validate(queued).model_dump(mode="json")
    assert list(queued) == list(Event.model_fields)  # every field, in the model's order; no token


# strings shaped like what the fast path looks at, and its edge cases
_shaped = st.one_of(
    st.sampled_from(["", "0", "7", "007", "-1", "+1", " 5", "5 ", "5\n", "1" * 19, "1.5", "x", "\n"]),
    st.from_regex(r"[A-Za-z0-9_.:\-]{1,8}", fullmatch=True),
    st.text(max_size=6),
    st.just("a" * 4097),
    st.just("h" * 65),
)
_value = st.one_of(
    _shaped, st.none(), st.integers(-5, 10**6), st.booleans(), st.just([]), st.just({"x": "1"})
)


_BITRIX24_FORM: dict[str, Any] = {
    "event": "onCrmDealUpdate",
    "event_handler_id": "12",
    "data": {"FIELDS": {"ID": "759"}},
    "ts": "1736405807",
    "auth": {
        "member_id": "m1",
        "application_token": "t",
        "domain": "x.bitrix24.ru",
        "user_id": "5",
        "expires": "",
        "scope": "crm",
    },
}


@st.composite
def _shaped_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A delivery as Bitrix24 sends it, with a few of its values replaced by edge cases."""
    payload = {**_BITRIX24_FORM, "auth": dict(_BITRIX24_FORM["auth"])}
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from([part for part in (payload, payload["auth"]) if isinstance(part, dict)]))
        name = draw(st.sampled_from(sorted({*where, "extra"})))
        if draw(st.booleans()) and name in where and name != "auth":
            del where[name]
        else:
            where[name] = draw(_value)
    return payload


@reaches(fast=0.2)
@given(st.one_of(_shaped_payloads(), _payloads()))
def test_the_fast_path_answers_as_the_model_or_not_at_all(payload: dict[str, Any]) -> None:
    plain = Plain.read(payload)
    if plain is None:
        return
    branch("fast")
    assert Delivery.model_validate(payload).plain() == plain  # raises if the model refuses it
    assert plain.queued_form(1.0) == Delivery.model_validate(payload).queued_form(1.0)


_EDGES: list[object] = [
    *["", "0", "7", "007", "-1", "+1", " 5", "5 ", "5\n", "1" * 19, "1.5", "x", "\n", "a" * 4097, "h" * 65],
    *[None, 0, -5, 10**6, True, [], ["a"], {"x": "1"}, "ONX", "onCrmDealAdd", "m-1.x_2"],
]


def _agrees(payload: dict[str, Any]) -> bool:
    plain = Plain.read(payload)
    try:
        model = Delivery.model_validate(payload).plain()
    except ValueError:
        return plain is None
    return plain is None or plain == model


@pytest.mark.parametrize("field", ["event", "event_handler_id", "data", "ts", "auth"])
def test_the_fast_path_agrees_on_every_edge_of_every_field(field: str) -> None:
    for value in _EDGES:
        assert _agrees({**_BITRIX24_FORM, field: value}), (field, value)
        assert _agrees({name: v for name, v in _BITRIX24_FORM.items() if name != field}), field
    for name in [*_BITRIX24_FORM["auth"], "access_token", "expires_in", "status", "other"]:
        for value in _EDGES:
            payload = {**_BITRIX24_FORM, "auth": {**_BITRIX24_FORM["auth"], name: value}}
            assert _agrees(payload), (name, value)


def test_the_fast_path_takes_what_bitrix24_sends() -> None:
    form = _BITRIX24_FORM
    assert Plain.read(form) == Delivery.model_validate(form).plain()
    assert Plain.read({**form, "ts": "0123"}) is None  # left to the model
