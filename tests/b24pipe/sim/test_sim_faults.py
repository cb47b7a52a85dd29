"""Fault injection on demand, another app's traffic, and a renamed portal's 302."""

from __future__ import annotations

import http.client
import urllib.parse

import pytest

from b24pipe.sim.client import Installation, SimClient, SimPortal


@pytest.fixture
def portal(simulator: SimClient) -> SimPortal:
    return simulator.create_portal()


@pytest.fixture
def app(simulator: SimClient, portal: SimPortal) -> Installation:
    return simulator.install(portal.member_id)


def test_counted_500_and_html_faults(simulator: SimClient, portal: SimPortal, app: Installation) -> None:
    simulator.faults(portal.member_id, rest_500=1, rest_html=1)
    html = simulator.rest(portal, "user.admin", token=app.access_token)
    assert html.status == 502 and html.headers["Content-Type"].startswith("text/html")
    error = simulator.rest(portal, "user.admin", token=app.access_token)
    assert (error.status, error.body["error"]) == (500, "INTERNAL_SERVER_ERROR")
    assert simulator.rest(portal, "user.admin", token=app.access_token).status == 200


def test_faults_limited_to_methods(simulator: SimClient, portal: SimPortal, app: Installation) -> None:
    simulator.faults(portal.member_id, rest_500=1, fault_methods=["crm.deal.add"])
    assert simulator.rest(portal, "user.admin", token=app.access_token).status == 200
    assert simulator.rest(portal, "crm.deal.add", {"fields": {}}, token=app.access_token).status == 500


def test_dropped_connection(simulator: SimClient, portal: SimPortal, app: Installation) -> None:
    simulator.faults(portal.member_id, rest_drop=1)
    url = urllib.parse.urlsplit(f"{portal.client_endpoint}user.admin.json")
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    conn.request(
        "POST",
        url.path,
        body=f"auth={app.access_token}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.getresponse()
    conn.close()
    assert simulator.rest(portal, "user.admin", token=app.access_token).status == 200


def test_authorization_server_down(simulator: SimClient, portal: SimPortal, app: Installation) -> None:
    simulator.faults(portal.member_id, oauth_down=True)
    down = simulator.refresh(app.refresh_token)
    assert down.status == 503 and "Service Unavailable" in down.body
    info = simulator.call(f"{simulator.oauth_url}/rest/app.info", {"auth": app.access_token})
    assert info.status == 503
    simulator.faults(portal.member_id, oauth_down=False)
    assert simulator.refresh(app.refresh_token).status == 200  # nothing was consumed while down


def test_bad_fault_names_are_refused(simulator: SimClient, portal: SimPortal) -> None:
    from b24pipe.sim.client import SimError

    with pytest.raises(SimError) as bad:
        simulator.faults(portal.member_id, rest_500="many")
    assert bad.value.status == 400
    with pytest.raises(SimError):
        simulator.faults(portal.member_id, explode=True)
    assert simulator.stats(portal.member_id)["faults"]["rest_500"] == 0


def test_another_apps_traffic_eats_the_bucket(
    simulator: SimClient, portal: SimPortal, app: Installation
) -> None:
    simulator.freeze_clock(portal.member_id)
    simulator.faults(portal.member_id, foreign_burst=45)
    statuses = [simulator.rest(portal, "user.admin", token=app.access_token).status for _ in range(7)]
    assert statuses == [200] * 5 + [503] * 2
    # the other app sends 2/s: exactly the drain, so nothing frees up
    simulator.faults(portal.member_id, foreign_rate=2)
    simulator.advance_clock(portal.member_id, 10)
    assert simulator.rest(portal, "user.admin", token=app.access_token).status == 503


def test_domain_change_answers_302(simulator: SimClient, portal: SimPortal, app: Installation) -> None:
    renamed = simulator.change_domain(portal.member_id, f"new-{portal.domain}")
    moved = simulator.rest(portal, "user.admin", token=app.access_token)
    assert moved.status == 302
    assert moved.headers["Location"] == f"{renamed.client_endpoint}user.admin.json"
    assert simulator.rest(renamed, "user.admin", token=app.access_token).body["result"] is True
    info = simulator.call(f"{simulator.oauth_url}/rest/app.info", {"auth": app.access_token}).body["result"]
    assert info["install"]["domain"] == renamed.domain
    assert info["install"]["client_endpoint"] == renamed.client_endpoint
