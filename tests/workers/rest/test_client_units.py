"""Pure parts of the REST client: parameter encoding, field diffs, error mapping, decisions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.portals import Portal, Status
from shared.settings import Settings
from workers import errors
from workers.portals.binding import binding_diff, desired_bindings, spread
from workers.rest.operating import Report, pause_for, report_from
from workers.rest.params import changed_fields
from workers.rest.tokens import keepalive_due, needs_refresh
from workers.rest.transport import Answer, error_code, error_for

_scalars = st.one_of(st.integers(), st.text(max_size=20), st.booleans())
_keys = st.text(alphabet="ABCDEFGHIJ_xyz019", min_size=1, max_size=8)


@given(st.dictionaries(_keys, st.one_of(st.integers(), st.text(max_size=10), st.booleans()), max_size=6))
def test_changed_fields_is_empty_against_bitrix_strings_of_the_same_values(wanted: dict[str, object]) -> None:
    as_stored = {k: ("Y" if v else "N") if isinstance(v, bool) else str(v) for k, v in wanted.items()}
    assert changed_fields(as_stored, wanted) == {}
    assert changed_fields({}, {"TITLE": "x"}) == {"TITLE": "x"}
    assert changed_fields({"OPPORTUNITY": "5"}, {"OPPORTUNITY": 6}) == {"OPPORTUNITY": 6}


def test_error_mapping_follows_bitrix_codes() -> None:
    def err(status: int, code: str) -> errors.B24Error:
        return error_for(Answer(status, {"error": code, "error_description": "d"}), "crm.deal.get")

    assert isinstance(err(403, "insufficient_scope"), errors.ScopeMissing)
    assert isinstance(err(403, "WRONG_AUTH_TYPE"), errors.AccessDenied)
    assert isinstance(err(404, "ERROR_METHOD_NOT_FOUND"), errors.MethodNotFound)
    assert isinstance(err(400, "ERROR_ARGUMENT"), errors.BadRequest)
    assert isinstance(err(401, "NO_AUTH_FOUND"), errors.AuthRevoked)
    assert isinstance(err(500, "PORTAL_DELETED"), errors.PortalDeleted)
    assert err(500, "INTERNAL_SERVER_ERROR").retryable
    assert not err(400, "").retryable
    html = Answer(502, None)
    assert error_code(html) == "HTML_ERROR_PAGE" and error_for(html, "m").retryable
    assert error_code(Answer(200, {"result": 1})) is None


def test_error_texts_do_not_carry_tokens() -> None:
    token = "a" * 70
    text = str(error_for(Answer(400, {"error": "X", "error_description": f"bad auth={token} {token}"}), "m"))
    assert token not in text


def test_operating_pause_decision() -> None:
    assert pause_for(None, 100, 400) == 0
    assert pause_for(Report(300, 200), 100, 400) == 0
    assert pause_for(Report(450, 160), 100, 400) == 60
    assert pause_for(Report(450, 90), 100, 400) == 0
    # reset_at is moved from the server's clock to ours through the block's `finish`.
    report = report_from({"operating": 450, "operating_reset_at": 1030, "finish": 1000}, now=50)
    assert report == Report(450, 80)
    # From the start when the block names it: a long request never shortens the pause.
    block = {"operating": 450, "operating_reset_at": 1030, "start": 990, "finish": 1000}
    assert report_from(block, now=50) == Report(450, 90)
    assert report_from({"start": 1}, now=0) is None


def test_refresh_decisions() -> None:
    portal = Portal(member_id="m", domain="d", refresh_token="ct", expires=1000, updated_at=0)
    assert needs_refresh(portal, 950) and not needs_refresh(portal, 900)
    after = 20 * 86400
    assert keepalive_due(portal, 30 * 86400, after)
    assert not keepalive_due(
        Portal(member_id="m", domain="d", refresh_token="ct", updated_at=100), 200, after
    )
    assert not keepalive_due(
        Portal(member_id="m", domain="d", refresh_token="ct", updated_at=0, status=Status.REAUTH),
        10**9,
        after,
    )


def test_binding_diff_is_what_to_change() -> None:
    url = "https://app.example/b24/events"
    existing: list[dict[str, str | int]] = [
        {"event": "ONCRMDEALUPDATE", "handler": url, "offline": 0},
        {"event": "ONCRMLEADADD", "handler": url},
        {"event": "ONCRMLEADADD", "handler": "https://other.example/"},
        {"event": "ONAPPUNINSTALL", "handler": url},
        {"event": "ONAPPINSTALL", "handler": url},  # an installation handler: never ours to drop
    ]
    desired = desired_bindings(["ONCRMDEALUPDATE", "oncrmdealadd"], url, Settings())
    diff = binding_diff(existing, desired, url)
    assert [b.event for b in diff.bind] == ["ONAPPTEST", "ONAPPUPDATE", "ONCRMDEALADD"]
    assert all(b.bind_params() == {"event": b.event, "handler": url} for b in diff.bind)
    assert [b.event for b in diff.unbind] == ["ONCRMLEADADD"]
    assert diff.unbind[0].unbind_params() == {"event": "ONCRMLEADADD", "handler": url}
    applied = [row for row in existing if row["event"] != "ONCRMLEADADD" or row["handler"] != url]
    again = binding_diff([*applied, *({"event": b.event, "handler": url} for b in diff.bind)], desired, url)
    assert not again.changed
    # another app's binding of a wanted event is not ours: ours is still missing
    assert binding_diff([{"event": "ONAPPTEST", "handler": "https://x/"}], desired, url).bind[0].event == (
        "ONAPPTEST"
    )


def test_spread_places_portals_evenly_across_the_interval() -> None:
    members = [f"m{i}" for i in range(10)]
    placed = spread(members, 900)
    assert sorted(m for m, _ in placed) == members
    assert sorted(d for _, d in placed) == [i * 90.0 for i in range(10)]
    assert spread(list(reversed(members)), 900) == placed  # each portal keeps its place
