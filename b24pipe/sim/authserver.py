"""The authorization server (oauth.bitrix.info): `/oauth/token/` and `/rest/app.info`.

`/oauth/token/` takes GET or POST with `grant_type` authorization_code or refresh_token.
Bad client credentials: `invalid_client`; a bad, expired or already used code or refresh
token: `invalid_grant`. Like the real server, the answer's `domain` is the authorization
server's own host, not the portal's: use `client_endpoint` and `member_id`.
`/rest/app.info` verifies a token that arrived from outside and names the installation.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from aiohttp import web

from b24pipe.sim import errors
from b24pipe.sim.errors import RestError
from b24pipe.sim.oauth import OAuthError, TokenPair
from b24pipe.sim.portal import Portal
from b24pipe.sim.rest import SIM, authenticate, bearer_or_field, json_response, read_params

DOWN_PAGE = "<html><head><title>503 Service Unavailable</title></head><body>Service Unavailable</body></html>"


def token_answer(portal: Portal, pair: TokenPair, server_host: str) -> dict[str, Any]:
    return {
        "access_token": pair.access_token,
        "expires": pair.expires,
        "expires_in": pair.expires_in,
        "scope": ",".join(portal.scope),
        "domain": server_host,
        "server_endpoint": portal.server_endpoint,
        "status": portal.status,
        "client_endpoint": portal.client_endpoint,
        "member_id": portal.member_id,
        "user_id": pair.user_id,
        "refresh_token": pair.refresh_token,
    }


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def _faults(request: web.Request, portal: Portal | None) -> web.Response | None:
    if portal is None:
        return None
    if portal.faults.oauth_delay:
        await asyncio.sleep(portal.faults.oauth_delay)
        if _gone(request):  # the caller gave up or died before the server got to its request
            return web.Response(status=499)
    if portal.faults.oauth_down:
        return web.Response(status=503, text=DOWN_PAGE, content_type="text/html")
    return None


async def token(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    try:
        params = await read_params(request)
    except RestError as exc:
        return json_response({"error": "invalid_request", "error_description": exc.description}, 400)
    grant_type = str(params.get("grant_type") or "")
    code, refresh = str(params.get("code") or ""), str(params.get("refresh_token") or "")
    owner_id = (
        sim.tokens.code_owner(code)
        if grant_type == "authorization_code"
        else sim.tokens.refresh_owner(refresh)
    )
    portal = sim.portals.get(owner_id) if owner_id else None
    if portal is not None:
        portal.stats.oauth_requests += 1
    down = await _faults(request, portal)
    if down is not None:
        return down
    try:
        if grant_type not in ("authorization_code", "refresh_token"):
            raise OAuthError("invalid_request", "Unsupported grant_type")
        good_id = hmac.compare_digest(str(params.get("client_id") or ""), sim.client_id)
        good_secret = hmac.compare_digest(str(params.get("client_secret") or ""), sim.client_secret)
        if not (good_id and good_secret):
            raise OAuthError("invalid_client", "Invalid client credentials", 401)
        if portal is None or not portal.installed:
            raise OAuthError("invalid_grant", "Invalid grant")
        now = portal.clock.time()
        if grant_type == "authorization_code":
            pair = sim.tokens.exchange_code(code, now, portal.token_ttl)
        else:
            if refresh in sim.tokens.used_refresh:
                portal.stats.refresh_reused += 1
            pair = sim.tokens.rotate(refresh, now, portal.token_ttl)
            portal.stats.refreshes += 1
    except OAuthError as exc:
        return json_response({"error": exc.code, "error_description": exc.description}, exc.status)
    if portal.faults.oauth_hold:
        await asyncio.sleep(portal.faults.oauth_hold)  # the pair is issued; the answer may be lost
    return json_response(token_answer(portal, pair, request.host))


async def app_info(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    try:
        params = await read_params(request)
        access = bearer_or_field(request, params)
        grant = sim.tokens.access.get(access or "")
        portal = sim.portals.get(grant.member_id) if grant else None
        down = await _faults(request, portal)
        if down is not None:
            return down
        if portal is None or portal.app is None:
            raise errors.invalid_token() if access else errors.no_auth()
        grant = authenticate(sim, portal, access)
    except RestError as exc:
        return json_response(exc.body(), exc.status)
    app = portal.app
    scope = ",".join(portal.scope)
    return json_response(
        {
            "result": {
                "client_id": sim.client_id,
                "scope": scope,
                "expires": int(grant.expires_at),
                "user_id": grant.user_id,
                "install": {
                    "installed": app.installed,
                    "version": app.version,
                    "status": portal.status,
                    "scope": scope,
                    "domain": portal.domain,
                    "uri": app.handler_url or app.install_url or "",
                    "client_endpoint": portal.client_endpoint,
                    "member_id": portal.member_id,
                    "member_type": "PORTAL",
                },
            }
        }
    )


async def other_method(request: web.Request) -> web.Response:
    return json_response(errors.method_not_found().body(), 404)
