"""The simulated portal REST: CRUD, lists, batch, the leaky bucket, operating time, scopes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from b24pipe.sim.client import Installation, SimClient, SimPortal


@pytest.fixture
def portal(simulator: SimClient) -> SimPortal:
    return simulator.create_portal(drain=1000, burst=1000)  # fast tests: limits out of the way


@pytest.fixture
def app(simulator: SimClient, portal: SimPortal) -> Installation:
    return simulator.install(portal.member_id)


def test_deal_crud(simulator: SimClient, portal: SimPortal, app: Installation) -> None:
    added = simulator.rest(
        portal, "crm.deal.add", {"fields": {"TITLE": "Big", "OPPORTUNITY": 10}}, token=app.access_token
    )
    deal_id = added.body["result"]
    assert isinstance(deal_id, int)
    got = simulator.rest(portal, "crm.deal.get", {"id": deal_id}, token=app.access_token).body["result"]
    assert (got["ID"], got["TITLE"], got["OPPORTUNITY"], got["CREATED_BY_ID"]) == (
        str(deal_id),
        "Big",
        "10",
        "1",
    )
    updated = simulator.rest(
        portal,
        "crm.deal.update",
        {"id": deal_id, "fields": {"TITLE": "Bigger"}},
        token=app.access_token,
        form=True,
    )
    assert updated.body["result"] is True
    assert (
        simulator.rest(portal, "crm.deal.get", {"id": deal_id}, token=app.access_token).body["result"][
            "TITLE"
        ]
        == "Bigger"
    )
    assert simulator.rest(portal, "crm.deal.delete", {"id": deal_id}, token=app.access_token).body["result"]
    gone = simulator.rest(portal, "crm.deal.get", {"id": deal_id}, token=app.access_token)
    assert (gone.status, gone.body["error_description"]) == (400, "Not found")


def test_list_pagination_total_next_and_start_minus_one(
    simulator: SimClient, portal: SimPortal, app: Installation
) -> None:
    commands = {f"a{i}": f"crm.lead.add?fields[TITLE]=lead{i}" for i in range(50)}
    simulator.rest(portal, "batch", {"cmd": commands}, token=app.access_token)
    simulator.rest(
        portal,
        "batch",
        {"cmd": {f"b{i}": "crm.lead.add?fields[TITLE]=more" for i in range(20)}},
        token=app.access_token,
    )
    first = simulator.rest(portal, "crm.lead.list", {}, token=app.access_token).body
    assert (len(first["result"]), first["total"], first["next"]) == (50, 70, 50)
    second = simulator.rest(portal, "crm.lead.list", {"start": first["next"]}, token=app.access_token).body
    assert len(second["result"]) == 20 and "next" not in second
    fast = simulator.rest(
        portal,
        "crm.lead.list",
        {"start": -1, "order": {"ID": "ASC"}, "filter": {">ID": 60}, "select": ["ID"]},
        token=app.access_token,
    ).body
    assert [row["ID"] for row in fast["result"]] == [str(i) for i in range(61, 71)]
    assert "total" not in fast and "next" not in fast


def test_batch_references_halt_and_limits(simulator: SimClient, portal: SimPortal, app: Installation) -> None:
    answer = simulator.rest(
        portal,
        "batch",
        {
            "halt": 0,
            "cmd": {
                "add": "crm.deal.add?fields[TITLE]=x",
                "get": "crm.deal.get?id=$result[add]",
                "bad": "crm.deal.get?id=999999",
                "list": "crm.deal.list?filter[ID]=$result[get][ID]",
            },
        },
        token=app.access_token,
    )
    assert answer.status == 200
    result = answer.body["result"]
    assert result["result"]["get"]["ID"] == str(result["result"]["add"])
    assert result["result_error"]["bad"]["error_description"] == "Not found"
    assert result["result_total"]["list"] == 1 and set(result["result_time"]) == {"add", "get", "list"}
    halted = simulator.rest(
        portal,
        "batch",
        {"halt": 1, "cmd": {"bad": "crm.deal.get?id=999999", "never": "crm.deal.add?fields[TITLE]=y"}},
        token=app.access_token,
    )
    assert set(halted.body["result"]["result_error"]) == {"bad"} and halted.body["result"]["result"] == []
    many = simulator.rest(
        portal, "batch", {"cmd": {f"c{i}": "user.admin" for i in range(52)}}, token=app.access_token
    ).body["result"]
    assert len(many["result"]) == 50
    assert {e["error"] for e in many["result_error"].values()} == {"ERROR_BATCH_LENGTH_EXCEEDED"}
    nested = simulator.rest(
        portal, "batch", {"cmd": {"n": "batch?cmd[x]=user.admin"}}, token=app.access_token
    )
    assert nested.body["result"]["result_error"]["n"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    # PHP's json_encode: commands keyed 0..n-1 come back as a JSON list only when all answered
    listed = simulator.rest(
        portal,
        "batch",
        {"cmd": ["user.admin", "crm.deal.get?id=999999", "user.admin"]},
        token=app.access_token,
    ).body["result"]
    assert listed["result"] == {"0": True, "2": True} and set(listed["result_error"]) == {"1"}
    both = simulator.rest(portal, "batch", {"cmd": ["user.admin", "user.admin"]}, token=app.access_token)
    assert both.body["result"]["result"] == [True, True] and both.body["result"]["result_error"] == []


def test_bucket_arithmetic_on_a_standard_portal(simulator: SimClient) -> None:
    portal = simulator.create_portal(plan="standard")
    app = simulator.install(portal.member_id)
    simulator.freeze_clock(portal.member_id)

    def burst(count: int) -> list[int]:
        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(
                pool.map(
                    lambda _: simulator.rest(portal, "user.admin", token=app.access_token).status,
                    range(count),
                )
            )

    statuses = burst(60)
    assert (statuses.count(200), statuses.count(503)) == (50, 10)
    simulator.advance_clock(portal.member_id, 5)
    later = burst(12)
    assert (later.count(200), later.count(503)) == (10, 2)
    refused = simulator.rest(portal, "user.admin", token=app.access_token)
    assert refused.body["error"] == "QUERY_LIMIT_EXCEEDED" and "time" in refused.body
    stats = simulator.stats(portal.member_id)
    assert stats["query_limit_exceeded"] == 13 and stats["bucket_level"] == 50
    # a batch of 50 commands is one request: 1 s drains 2, the batch takes 1, one more fits
    simulator.advance_clock(portal.member_id, 1)
    batch = simulator.rest(
        portal, "batch", {"cmd": {f"c{i}": "user.admin" for i in range(50)}}, token=app.access_token
    )
    assert batch.status == 200 and len(batch.body["result"]["result"]) == 50
    assert simulator.rest(portal, "user.admin", token=app.access_token).status == 200
    assert simulator.rest(portal, "user.admin", token=app.access_token).status == 503


def test_enterprise_plan_burst(simulator: SimClient) -> None:
    portal = simulator.create_portal(plan="enterprise")
    assert (portal.raw["drain"], portal.raw["burst"]) == (5.0, 250.0)


def test_operating_time_limit_blocks_one_method(simulator: SimClient) -> None:
    portal = simulator.create_portal(drain=1000, burst=1000, operating_limit=10, costs={"crm.deal.list": 4})
    app = simulator.install(portal.member_id)
    operating = []
    for _ in range(3):
        answer = simulator.rest(portal, "crm.deal.list", {}, token=app.access_token)
        assert answer.status == 200
        operating.append(answer.body["time"]["operating"])
    assert operating == [4, 8, 12]
    blocked = simulator.rest(portal, "crm.deal.list", {}, token=app.access_token)
    assert (blocked.status, blocked.body["error"]) == (429, "OPERATION_TIME_LIMIT")
    assert simulator.rest(portal, "crm.deal.add", {"fields": {}}, token=app.access_token).status == 200
    reset_at = blocked.body["time"]["operating_reset_at"]
    assert reset_at > blocked.body["time"]["start"]
    simulator.advance_clock(portal.member_id, 601)
    assert simulator.rest(portal, "crm.deal.list", {}, token=app.access_token).status == 200


def test_insufficient_scope(simulator: SimClient) -> None:
    portal = simulator.create_portal(drain=1000, burst=1000, scope=["user"])
    app = simulator.install(portal.member_id)
    answer = simulator.rest(portal, "crm.deal.list", {}, token=app.access_token)
    assert (answer.status, answer.body["error"]) == (403, "insufficient_scope")
    assert simulator.rest(portal, "user.admin", token=app.access_token).status == 200


def test_token_of_another_portal_is_invalid(
    simulator: SimClient, portal: SimPortal, app: Installation
) -> None:
    other = simulator.create_portal()
    answer = simulator.rest(other, "user.admin", token=app.access_token)
    assert (answer.status, answer.body["error"]) == (401, "invalid_token")


def test_introspection_counts_requests_per_method(
    simulator: SimClient, portal: SimPortal, app: Installation
) -> None:
    for _ in range(3):
        simulator.rest(portal, "user.admin", token=app.access_token)
    simulator.rest(portal, "profile", token=app.access_token)
    stats = simulator.stats(portal.member_id)
    assert stats["requests"] == {"user.admin": 3, "profile": 1}
    assert stats["statuses"] == {"200": 4}
    assert simulator.stats()["portals"][portal.member_id]["requests_total"] == 4


def test_inbound_webhook_authenticates_by_path(
    simulator: SimClient, portal: SimPortal, app: Installation
) -> None:
    url = simulator.add_webhook(portal.member_id, user_id=1)
    assert url.startswith(portal.client_endpoint) and url.count("/") == portal.client_endpoint.count("/") + 2
    added = simulator.rest(url, "crm.deal.add", {"fields": {"TITLE": "via webhook"}})
    assert added.status == 200, added.body
    got = simulator.rest(url, "crm.deal.get", {"id": added.body["result"]}).body["result"]
    assert got["CREATED_BY_ID"] == "1"
    forged = url.replace(url.rstrip("/").rsplit("/", 1)[1], "0" * 16)
    assert simulator.rest(forged, "crm.deal.get", {"id": 1}).body["error"] == "invalid_token"
