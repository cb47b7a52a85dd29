"""The control API under `/_sim/`: what a test does to the world around the app.

JSON in, JSON out. Bad input answers 400 `{"error": ...}` and changes nothing; an unknown
portal answers 404. Every portal-specific switch (clock, faults, limits) is per portal, so
tests isolate themselves by creating their own portals instead of resetting the simulator.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import orjson
from aiohttp import web

from b24pipe.sim import frame, lifecycle
from b24pipe.sim.changes import BadChange, apply_change
from b24pipe.sim.events import change_deliveries
from b24pipe.sim.portal import PLANS, Portal, User
from b24pipe.sim.rest import SIM, json_response
from b24pipe.sim.state import Simulator

_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,200}[a-z0-9])?$")
_MEMBER = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
routes = web.RouteTableDef()


class BadInput(Exception):
    pass


def _bad(message: str) -> web.Response:
    return json_response({"error": message}, 400)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadInput("body is not JSON") from None
    if not isinstance(body, dict):
        raise BadInput("body must be a JSON object")
    return body


def _typed(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise BadInput(f"{name} must be a number")
    if not isinstance(value, kind):
        raise BadInput(f"{name} has the wrong type")
    return value


def _portal(request: web.Request) -> Portal:
    portal = request.app[SIM].portals.get(request.match_info["member_id"])
    if portal is None:
        raise web.HTTPNotFound(text='{"error":"unknown portal"}', content_type="application/json")
    return portal


def _installed(portal: Portal) -> None:
    if not portal.installed:
        raise BadInput("the app is not installed on this portal")


def portal_info(portal: Portal) -> dict[str, Any]:
    return {
        "member_id": portal.member_id,
        "domain": portal.domain,
        "client_endpoint": portal.client_endpoint,
        "server_endpoint": portal.server_endpoint,
        "drain": portal.bucket.drain,
        "burst": portal.bucket.burst,
        "scope": portal.scope,
        "token_ttl": portal.token_ttl,
        "status": portal.status,
        "users": [
            {"id": u.id, "admin": u.admin, "name": u.name, "last_name": u.last_name}
            for u in portal.users.values()
        ],
    }


def _users(raw: Any) -> list[User]:
    if raw is None:
        return [User(1, True, "Admin", "Simulated"), User(2, False, "User", "Simulated")]
    if not isinstance(raw, list) or not raw:
        raise BadInput("users must be a non-empty list")
    users = []
    for item in raw:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("id"), int)
            or isinstance(item.get("id"), bool)
        ):
            raise BadInput("each user needs an integer id")
        users.append(
            User(
                item["id"],
                bool(item.get("admin", False)),
                str(item.get("name", "")),
                str(item.get("last_name", "")),
            )
        )
    return users


def _limits(portal: Portal, body: dict[str, Any]) -> None:
    drain = _typed(body, "drain", (int, float))
    burst = _typed(body, "burst", (int, float))
    operating_limit = _typed(body, "operating_limit", (int, float))
    costs = _typed(body, "costs", dict, {})
    if any(v is not None and v <= 0 for v in (drain, burst, operating_limit)):
        raise BadInput("limits must be positive")
    if not all(isinstance(k, str) and isinstance(v, int | float) and v >= 0 for k, v in costs.items()):
        raise BadInput("costs maps method names to seconds")
    now = portal.clock.monotonic()
    portal.bucket.level_at(now)
    if drain is not None:
        portal.bucket.drain = float(drain)
    if burst is not None:
        portal.bucket.burst = float(burst)
    if operating_limit is not None:
        portal.operating.limit = float(operating_limit)
    portal.operating.costs.update({k.lower(): float(v) for k, v in costs.items()})


@routes.post("/_sim/portals")
async def create_portal(request: web.Request) -> web.Response:
    sim: Simulator = request.app[SIM]
    try:
        body = await _body(request)
        member_id = _typed(body, "member_id", str) or secrets.token_hex(16)
        domain = (_typed(body, "domain", str) or f"p{member_id[:12]}.bitrix24.test").lower()
        if not _MEMBER.match(member_id) or not _DOMAIN.match(domain):
            raise BadInput("bad member_id or domain")
        if member_id in sim.portals or domain in sim.domains:
            return json_response({"error": "portal exists"}, 409)
        plan = _typed(body, "plan", str, "standard")
        if plan not in PLANS:
            raise BadInput(f"plan must be one of {sorted(PLANS)}")
        scope = _typed(body, "scope", list, ["crm", "user"])
        ttl = _typed(body, "token_ttl", int, sim.token_ttl)
        if ttl <= 0 or not all(isinstance(s, str) for s in scope):
            raise BadInput("token_ttl must be positive and scope a list of names")
        drain, burst = PLANS[plan]
        portal = Portal(
            base_url=sim.base_url,
            member_id=member_id,
            domain=domain,
            drain=drain,
            burst=burst,
            users=_users(body.get("users")),
            scope=scope,
            token_ttl=ttl,
            status=_typed(body, "status", str, "L"),
            offline_extended=_typed(body, "offline_extended", bool, True),
        )
        _limits(portal, body)
    except BadInput as exc:
        return _bad(str(exc))
    sim.add_portal(portal)
    return json_response(portal_info(portal), 201)


@routes.get("/_sim/portals/{member_id}")
async def show_portal(request: web.Request) -> web.Response:
    portal = _portal(request)
    return json_response(portal_info(portal) | portal.snapshot())


@routes.post("/_sim/portals/{member_id}/install")
async def install(request: web.Request) -> web.Response:
    sim, portal = request.app[SIM], _portal(request)
    try:
        body = await _body(request)
        if portal.installed:
            return json_response({"error": "already installed"}, 409)
        admins = [u.id for u in portal.users.values() if u.admin]
        user_id = _typed(body, "user_id", int, admins[0] if admins else None)
        if user_id not in portal.users:
            raise BadInput("user_id must name a user of the portal")
        bind_events = _typed(body, "bind_events", list, [])
        answer = await lifecycle.install(
            sim,
            portal,
            user_id=user_id,
            version=_typed(body, "version", int, 1),
            handler_url=_typed(body, "handler_url", str),
            install_url=_typed(body, "install_url", str),
            bind_events=[str(e).upper() for e in bind_events],
            lifecycle_to_handler=_typed(body, "lifecycle_to_handler", bool, True),
            finished=_typed(body, "finished", bool),
            frame=_typed(body, "frame", bool, False),
        )
    except BadInput as exc:
        return _bad(str(exc))
    return json_response(answer)


@routes.post("/_sim/portals/{member_id}/update")
async def update(request: web.Request) -> web.Response:
    sim, portal = request.app[SIM], _portal(request)
    try:
        body = await _body(request)
        _installed(portal)
        answer = await lifecycle.update(
            sim, portal, _typed(body, "version", int), _typed(body, "send_event", bool, False)
        )
    except BadInput as exc:
        return _bad(str(exc))
    return json_response(answer)


@routes.get("/_sim/portals/{member_id}/frame")
async def install_frame(request: web.Request) -> web.Response:
    """The portal's page around the install frame (see frame.py), for a browser."""
    sim, portal = request.app[SIM], _portal(request)
    install = sim.frames.get(portal.member_id)
    if install is None:
        return _bad("no install page waits for a browser on this portal")
    return web.Response(text=frame.page(portal.member_id, install), content_type="text/html")


@routes.post("/_sim/portals/{member_id}/install-finish")
async def install_finish(request: web.Request) -> web.Response:
    """What the BX24 stub's `installFinish()` reports: the install is finished."""
    portal = _portal(request)
    if portal.app is None:
        return _bad("the app is not installed on this portal")
    portal.app.finish_calls += 1
    portal.app.finished = True
    return json_response({"finished": True, "calls": portal.app.finish_calls})


@routes.get("/api/v1/")
async def bx24_library(request: web.Request) -> web.Response:
    return frame.stub()


@routes.post("/_sim/portals/{member_id}/payment")
async def payment(request: web.Request) -> web.Response:
    """`{"expired": true}`: the app's payment expired (no events, app.info says so)."""
    portal = _portal(request)
    try:
        portal.payment_expired = bool(_typed(await _body(request), "expired", bool, True))
    except BadInput as exc:
        return _bad(str(exc))
    return json_response({"payment_expired": portal.payment_expired})


@routes.post("/_sim/portals/{member_id}/uninstall")
async def uninstall(request: web.Request) -> web.Response:
    sim, portal = request.app[SIM], _portal(request)
    try:
        body = await _body(request)
        _installed(portal)
        answer = await lifecycle.uninstall(sim, portal, _typed(body, "clean", bool, False))
    except BadInput as exc:
        return _bad(str(exc))
    return json_response(answer)


@routes.post("/_sim/portals/{member_id}/tokens")
async def tokens(request: web.Request) -> web.Response:
    """A token pair for any user of the portal (e.g. a non-admin opening the app)."""
    sim, portal = request.app[SIM], _portal(request)
    try:
        body = await _body(request)
        _installed(portal)
        user_id = _typed(body, "user_id", int)
        if user_id not in portal.users:
            raise BadInput("user_id must name a user of the portal")
    except BadInput as exc:
        return _bad(str(exc))
    pair = sim.tokens.issue(portal.member_id, user_id, portal.clock.time(), portal.token_ttl)
    return json_response(
        {
            "access_token": pair.access_token,
            "refresh_token": pair.refresh_token,
            "expires": pair.expires,
            "expires_in": pair.expires_in,
            "user_id": user_id,
        }
    )


@routes.post("/_sim/portals/{member_id}/code")
async def code(request: web.Request) -> web.Response:
    """An authorization code, as the redirect after /oauth/authorize/ would carry it."""
    sim, portal = request.app[SIM], _portal(request)
    try:
        body = await _body(request)
        _installed(portal)
        user_id = _typed(body, "user_id", int, portal.app.installer_id if portal.app else 0)
        if user_id not in portal.users:
            raise BadInput("user_id must name a user of the portal")
    except BadInput as exc:
        return _bad(str(exc))
    value = sim.tokens.new_code(portal.member_id, user_id, portal.clock.time())
    return json_response(
        {
            "code": value,
            "member_id": portal.member_id,
            "domain": portal.domain,
            "scope": ",".join(portal.scope),
            "server_domain": request.host,
        }
    )


@routes.post("/_sim/portals/{member_id}/webhooks")
async def webhook(request: web.Request) -> web.Response:
    portal = _portal(request)
    try:
        user_id = _typed(await _body(request), "user_id", int)
    except BadInput as exc:
        return _bad(str(exc))
    if user_id not in portal.users:
        return _bad("user_id must name one of the portal's users")
    return json_response({"url": portal.add_webhook(user_id)})


@routes.post("/_sim/portals/{member_id}/expire")
async def expire(request: web.Request) -> web.Response:
    sim, portal = request.app[SIM], _portal(request)
    return json_response({"expired": sim.tokens.expire_portal(portal.member_id, portal.clock.time())})


@routes.post("/_sim/portals/{member_id}/clock")
async def clock(request: web.Request) -> web.Response:
    portal = _portal(request)
    try:
        body = await _body(request)
        advance = _typed(body, "advance", (int, float), 0)
        freeze = _typed(body, "freeze", bool)
        if advance < 0:
            raise BadInput("the clock only moves forward")
    except BadInput as exc:
        return _bad(str(exc))
    if freeze is not None:
        portal.clock.freeze(freeze)
    portal.clock.advance(float(advance))
    return json_response(
        {"offset": portal.clock.offset, "frozen": portal.clock.frozen, "time": portal.clock.time()}
    )


@routes.post("/_sim/portals/{member_id}/faults")
async def faults(request: web.Request) -> web.Response:
    """Fault switches (see faults.py), plus `foreign_rate`/`foreign_burst`: another app's traffic."""
    portal = _portal(request)
    try:
        body = await _body(request)
        foreign_rate = _typed(body, "foreign_rate", (int, float))
        foreign_burst = _typed(body, "foreign_burst", (int, float), 0)
        if (foreign_rate is not None and foreign_rate < 0) or foreign_burst < 0:
            raise BadInput("foreign traffic must not be negative")
        switches = {k: v for k, v in body.items() if k not in ("foreign_rate", "foreign_burst")}
        try:
            portal.faults.update(switches)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    except BadInput as exc:
        return _bad(str(exc))
    now = portal.clock.monotonic()
    if foreign_rate is not None:
        portal.bucket.level_at(now)
        portal.bucket.foreign_rate = float(foreign_rate)
    if foreign_burst:
        portal.bucket.add_foreign(float(foreign_burst), now)
    return json_response(
        portal.faults.as_dict()
        | {"foreign_rate": portal.bucket.foreign_rate, "bucket_level": portal.bucket.level_at(now)}
    )


@routes.post("/_sim/portals/{member_id}/limits")
async def limits(request: web.Request) -> web.Response:
    portal = _portal(request)
    try:
        _limits(portal, await _body(request))
    except BadInput as exc:
        return _bad(str(exc))
    return json_response(
        portal_info(portal) | {"operating_limit": portal.operating.limit, "costs": portal.operating.costs}
    )


@routes.post("/_sim/portals/{member_id}/domain")
async def domain(request: web.Request) -> web.Response:
    sim, portal = request.app[SIM], _portal(request)
    try:
        new = str(_typed(await _body(request), "domain", str, "")).lower()
        if not _DOMAIN.match(new):
            raise BadInput("bad domain")
        if new in sim.domains:
            return json_response({"error": "domain taken"}, 409)
    except BadInput as exc:
        return _bad(str(exc))
    sim.rename(portal, new)
    return json_response(portal_info(portal))


@routes.post("/_sim/portals/{member_id}/change")
async def change(request: web.Request) -> web.Response:
    """A person in the UI (`user_id`) or a robot (`robot: true`) changes a deal or lead."""
    sim, portal = request.app[SIM], _portal(request)
    try:
        body = await _body(request)
        entity, action = _typed(body, "entity", str, "deal"), _typed(body, "action", str, "update")
        robot = _typed(body, "robot", bool, False)
        user_id = None if robot else _typed(body, "user_id", int, next(iter(portal.users)))
        if user_id is not None and user_id not in portal.users:
            raise BadInput("user_id must name a user of the portal")
        fields = _typed(body, "fields", dict, {})
        done = apply_change(portal, entity, action, body.get("id"), fields, user_id)
    except (BadInput, BadChange) as exc:
        return _bad(str(exc))
    outgoing = change_deliveries(portal, sim.tokens, done)
    sim.sender.enqueue(portal, outgoing)
    return json_response({"id": int(done.entity_id), "event": done.event, "deliveries": len(outgoing)})


@routes.post("/_sim/portals/{member_id}/events/wait")
async def wait_events(request: web.Request) -> web.Response:
    """Answers once every queued event of the portal has been delivered (or failed)."""
    sim, portal = request.app[SIM], _portal(request)
    await sim.sender.drain(portal)
    return json_response(
        {"events_sent": portal.stats.events_sent, "events_failed": portal.stats.events_failed}
    )


@routes.get("/_sim/portals/{member_id}/deliveries")
async def deliveries(request: web.Request) -> web.Response:
    return json_response(list(_portal(request).stats.deliveries))


@routes.get("/_sim/stats")
async def stats(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    portals = {m: p.snapshot() for m, p in sim.portals.items()}
    totals = {
        name: sum(p[name] for p in portals.values())
        for name in (
            "requests_total",
            "query_limit_exceeded",
            "operation_time_limit",
            "refreshes",
            "refresh_reused",
            "events_sent",
            "events_failed",
        )
    }
    return json_response({"portals": portals, "totals": totals})


@routes.post("/_sim/reset")
async def reset(request: web.Request) -> web.Response:
    request.app[SIM].reset()
    return json_response({"ok": True})


@routes.get("/_sim/health")
async def health(request: web.Request) -> web.Response:
    return json_response({"ok": True})
