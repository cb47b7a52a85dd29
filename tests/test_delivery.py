"""A delivery's queued form: built by hand on the hot path, held equal to the model's."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.delivery import Delivery
from shared.events import Event

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


@given(_payloads())
def test_queued_form_is_the_models_dump(payload: dict[str, Any]) -> None:
    try:
        delivery = Delivery.model_validate(payload)
    except ValueError:
        return  # not a delivery: the ingress answers 400 before building anything
    queued = delivery.queued_form(received_at=1.5)
    assert queued == Event.model_validate(queued).model_dump(mode="json")
    assert list(queued) == list(Event.model_fields)  # every field, in the model's order; no token
