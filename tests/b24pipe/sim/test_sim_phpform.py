"""phpform reproduces PHP's http_build_query byte for byte (the ingress parser's reference)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from b24pipe.sim.client import SimClient
from b24pipe.sim.phpform import http_build_query, parse_str


@pytest.mark.parametrize(
    ("data", "php"),
    [
        (
            {
                "event": "ONCRMDEALUPDATE",
                "data": {"FIELDS": {"ID": 759}},
                "ts": 1736405807,
                "auth": {"member_id": "abc"},
            },
            "event=ONCRMDEALUPDATE&data%5BFIELDS%5D%5BID%5D=759&ts=1736405807&auth%5Bmember_id%5D=abc",
        ),
        ({"a": "x y~z*"}, "a=x+y%7Ez%2A"),
        ({"l": [1, 2]}, "l%5B0%5D=1&l%5B1%5D=2"),
        ({"n": None, "e": [], "t": True, "f": False}, "t=1&f=0"),
        ({"ü": "é&="}, "%C3%BC=%C3%A9%26%3D"),
        ({"k": {"a b": "1"}}, "k%5Ba+b%5D=1"),
    ],
)
def test_matches_php(data: dict[str, Any], php: str) -> None:
    assert http_build_query(data) == php


_key = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=8)
_value = st.text(max_size=20).filter(lambda s: "\x00" not in s)
_tree = st.recursive(
    _value, lambda children: st.dictionaries(_key, children, min_size=1, max_size=4), max_leaves=12
)


@given(st.dictionaries(_key, _tree, min_size=1, max_size=5))
def test_parse_str_reads_back_what_http_build_query_wrote(data: dict[str, Any]) -> None:
    encoded = http_build_query(data)
    assert "[" not in encoded and "]" not in encoded  # brackets always percent-encoded
    assert parse_str(encoded) == data


def test_slow_answers_make_clients_time_out(simulator: SimClient) -> None:
    portal = simulator.create_portal()
    app = simulator.install(portal.member_id)
    simulator.faults(portal.member_id, rest_delay=1.0, oauth_delay=1.0)
    impatient = SimClient(simulator.base_url, simulator.client_id, simulator.client_secret, timeout=0.2)
    with pytest.raises(TimeoutError):
        impatient.rest(portal, "user.admin", token=app.access_token)
    with pytest.raises(TimeoutError):
        impatient.refresh(app.refresh_token)
    simulator.faults(portal.member_id, rest_delay=0.0, oauth_delay=0.0)
    assert simulator.rest(portal, "user.admin", token=app.access_token).status == 200
