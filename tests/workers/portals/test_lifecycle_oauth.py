"""The pure verdicts on app.info answers: whatever the answer holds, only an exact match
on client_id, member_id, domain, installed (and version for updates) is trusted."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.oauth import AppInfo, Refuted, judge, parse_app_info
from tests.support.propcoverage import branch, reaches

GOOD: dict[str, Any] = {
    "result": {
        "client_id": "app.test.client",
        "scope": "crm",
        "user_id": 1,
        "install": {
            "installed": True,
            "version": 3,
            "domain": "A.example.com",
            "member_id": "m1",
            "client_endpoint": "https://a.example.com/rest/",
        },
    }
}


def verdict(body: object, version: str | None = None) -> Refuted | None:
    info = parse_app_info(body)
    if isinstance(info, Refuted):
        return info
    return judge(info, client_id="app.test.client", member_id="m1", domain="a.example.com", version=version)


def test_exact_answer_is_trusted_and_version_checked() -> None:
    assert verdict(GOOD) is None
    assert verdict(GOOD, version="3") is None
    assert verdict(GOOD, version="4") == Refuted("app.info names another version")


def test_error_answers_carry_only_the_code() -> None:
    assert parse_app_info({"error": "invalid_token", "error_description": "secret-ish"}) == Refuted(
        "invalid_token"
    )
    assert parse_app_info({"error": "x" * 500}) == Refuted("unexpected answer")
    assert parse_app_info("<html>") == Refuted("malformed app.info")


@reaches(accepted=0.05, refused=0.3)
@given(
    field=st.sampled_from(["client_id", "member_id", "domain", "installed", "client_endpoint"]),
    value=st.one_of(st.text(max_size=40), st.booleans(), st.none(), st.integers()),
)
def test_any_mismatch_is_refused(field: str, value: object) -> None:
    install: dict[str, Any] = dict(GOOD["result"]["install"])
    result: dict[str, Any] = {**GOOD["result"], "install": install}
    body = {"result": result}
    target = result if field == "client_id" else install
    target[field] = value
    info = parse_app_info(body)
    same = (
        (field == "client_id" and value == "app.test.client")
        or (field == "member_id" and value == "m1")
        or (
            field == "domain"
            and isinstance(value, str)
            and value.strip().lower().rstrip(".") == "a.example.com"
        )
        or (field == "installed" and value in (True, 1))
        or (field == "installed" and isinstance(value, str) and value.strip().upper() in ("1", "Y", "TRUE"))
        or (field == "client_endpoint" and value not in ("", None))
    )
    outcome = info if isinstance(info, Refuted) else verdict(body)
    assert (outcome is None) == same
    branch("accepted" if same else "refused")


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    )
)
def test_arbitrary_answers_never_crash_and_never_pass(body: object) -> None:
    result = parse_app_info(body)
    assert isinstance(result, (AppInfo, Refuted))
    if isinstance(result, AppInfo):
        assert verdict(body) is not None or (
            result.client_id == "app.test.client" and result.member_id == "m1"
        )
