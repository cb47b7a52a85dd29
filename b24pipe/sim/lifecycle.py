"""Install, update and uninstall of the app on a portal, as Bitrix24 performs them.

Install: tokens for the installing admin, a fresh `application_token`, ONAPPINSTALL (with
access and refresh token) POSTed to the installation handler, and the install page's POST.
Update: a new `application_token` and ONAPPUPDATE. Uninstall: every token revoked first,
then ONAPPUNINSTALL (no tokens, `data[CLEAN]`), then the bindings are gone.
Lifecycle events go to handlers bound with event.bind and, unless `lifecycle_to_handler` was
switched off at install, to the installation handler URL as well.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlencode

from b24pipe.sim.events import Outgoing, auth_block, event_form
from b24pipe.sim.oauth import TokenPair
from b24pipe.sim.portal import AppInstall, Portal
from b24pipe.sim.state import Simulator


def _pair_info(portal: Portal, pair: TokenPair, app: AppInstall) -> dict[str, Any]:
    return {
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "expires": pair.expires,
        "expires_in": pair.expires_in,
        "user_id": pair.user_id,
        "application_token": app.application_token,
        "member_id": portal.member_id,
        "domain": portal.domain,
        "client_endpoint": portal.client_endpoint,
        "server_endpoint": portal.server_endpoint,
        "version": app.version,
        "scope": ",".join(portal.scope),
    }


def _lifecycle_targets(portal: Portal, event: str) -> list[tuple[str, int]]:
    targets = [(b.handler, b.id) for b in portal.online_targets(event)]
    app = portal.app
    if (
        app
        and app.handler_url
        and app.lifecycle_to_handler
        and app.handler_url not in [t[0] for t in targets]
    ):
        targets.append((app.handler_url, portal.next_handler_id()))
    return targets


def _install_page(portal: Portal, app: AppInstall, pair: TokenPair) -> Outgoing:
    form = {
        "AUTH_ID": pair.access_token,
        "AUTH_EXPIRES": str(pair.expires_in),
        "REFRESH_ID": pair.refresh_token,
        "SERVER_ENDPOINT": portal.server_endpoint,
        "member_id": portal.member_id,
        "status": portal.status,
        "PLACEMENT": "DEFAULT",
        "PLACEMENT_OPTIONS": "{}",
        "APPLICATION_TOKEN": app.application_token,
        "APPLICATION_SCOPE": ",".join(portal.scope),
    }
    query = urlencode(
        {"DOMAIN": portal.domain, "PROTOCOL": "0", "LANG": app.language, "APP_SID": secrets.token_hex(16)}
    )
    return Outgoing(app.install_url or "", "INSTALL_PAGE", 0, form, kind="install_page", query=query)


async def install(
    sim: Simulator,
    portal: Portal,
    *,
    user_id: int,
    version: int,
    handler_url: str | None,
    install_url: str | None,
    bind_events: list[str],
    lifecycle_to_handler: bool,
    finished: bool | None = None,
    frame: bool = False,
) -> dict[str, Any]:
    """`finished`: whether the install counts as finished without the install page's
    `installFinish()` (default: only when there is no install page). `frame`: the install
    page is not POSTed by the simulator; a browser loads `frame_url`, whose BX24 stub reports
    `installFinish()` back."""
    app = portal.install(
        version=version,
        handler_url=handler_url,
        install_url=install_url,
        installer_id=user_id,
        lifecycle_to_handler=lifecycle_to_handler,
    )
    app.finished = not install_url if finished is None else finished
    pair = sim.tokens.issue(portal.member_id, user_id, portal.clock.time(), portal.token_ttl)
    if handler_url:
        for event in bind_events:
            portal.bind(event, handler_url, 0, False, None)
    outgoing: list[Outgoing] = []
    if handler_url:
        handler_id = portal.next_handler_id()
        data = {"VERSION": str(version), "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": app.language}
        auth = auth_block(portal, access=pair.access_token, refresh=pair.refresh_token, user_id=user_id)
        outgoing.append(
            Outgoing(
                handler_url,
                "ONAPPINSTALL",
                handler_id,
                event_form(portal, "ONAPPINSTALL", handler_id, data, auth),
            )
        )
    extra: dict[str, Any] = {}
    if install_url and frame:
        page = _install_page(portal, app, pair)
        sim.frames[portal.member_id] = page
        extra["frame_url"] = f"{sim.base_url}/_sim/portals/{portal.member_id}/frame"
    elif install_url:
        outgoing.append(_install_page(portal, app, pair))
    deliveries = await sim.sender.send_now(portal, outgoing)
    return _pair_info(portal, pair, app) | {"deliveries": deliveries} | extra


async def update(
    sim: Simulator, portal: Portal, version: int | None, send_event: bool = False
) -> dict[str, Any]:
    """A new version installed by the portal: every binding of the app gone. ONAPPUPDATE,
    with a new application token, is sent only with `send_event` (Bitrix24 cannot be relied
    on to send it: its only sender is a deprecated path); without it the app is told
    nothing, so its application token stays."""
    app = portal.app
    assert app is not None
    previous = app.version
    app.version = version if version is not None else previous + 1
    if send_event:
        app.application_token = secrets.token_hex(16)
    pair = sim.tokens.issue(portal.member_id, app.installer_id, portal.clock.time(), portal.token_ttl)
    data = {"VERSION": str(app.version), "PREVIOUS_VERSION": str(previous), "LANGUAGE_ID": app.language}
    outgoing = []
    targets = _lifecycle_targets(portal, "ONAPPUPDATE") if send_event else []
    portal.bindings.clear()
    for url, handler_id in targets:
        auth = auth_block(
            portal, access=pair.access_token, refresh=pair.refresh_token, user_id=app.installer_id
        )
        outgoing.append(
            Outgoing(
                url, "ONAPPUPDATE", handler_id, event_form(portal, "ONAPPUPDATE", handler_id, data, auth)
            )
        )
    deliveries = await sim.sender.send_now(portal, outgoing)
    return _pair_info(portal, pair, app) | {"previous_version": previous, "deliveries": deliveries}


async def uninstall(sim: Simulator, portal: Portal, clean: bool) -> dict[str, Any]:
    app = portal.app
    assert app is not None
    sim.tokens.revoke_portal(portal.member_id)
    app.installed = False
    data = {"LANGUAGE_ID": app.language, "CLEAN": "1" if clean else "0"}
    outgoing = []
    for url, handler_id in _lifecycle_targets(portal, "ONAPPUNINSTALL"):
        auth = auth_block(portal, access=None, refresh=None, user_id=None)
        outgoing.append(
            Outgoing(
                url,
                "ONAPPUNINSTALL",
                handler_id,
                event_form(portal, "ONAPPUNINSTALL", handler_id, data, auth),
            )
        )
    portal.bindings.clear()
    deliveries = await sim.sender.send_now(portal, outgoing)
    return {"member_id": portal.member_id, "clean": clean, "deliveries": deliveries}
