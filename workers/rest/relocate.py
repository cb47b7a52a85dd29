"""A portal that changed its domain answers 302 to the new one: follow it only once the
authorization server vouches for the new address.

A redirect is only what the old address says, and the request it asks us to repeat carries
the portal's access token. So the REST client never follows a portal's redirect blindly:

1. the new endpoint is read from the `Location` (the part before `/<method>.json`);
2. its host goes through the outbound policy as a would-be portal host (HTTPS, public
   addresses only, unless `B24PIPE_ALLOWED_HOSTS` lists it): nothing is sent to it yet;
3. `app.info` on the authorization server, with the portal's token, must name our
   `client_id`, the same `member_id`, an installed app, and that same endpoint;
4. only then is the record updated, with the domain and endpoint from the authorization
   server's answer (never from the redirect), and the call is made again.

Anything else leaves the record as it was, raises `OutboundBlocked` (not retried: someone
must look) and writes `portal_move_refused` to the security log.
"""

from __future__ import annotations

import logging
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

from shared.logs import log, security_event
from shared.oauth import AppInfo, OAuthClient, Refuted, Unreachable, judge
from shared.portals import Portal
from shared.settings import Settings
from workers.errors import ApiError, OutboundBlocked
from workers.rest.tokens import AUTH_SERVER_UNREACHABLE, TokenStore
from workers.rest.transport import Transport, host_of

_log = logging.getLogger("b24pipe.relocate")


def moved_endpoint(location: str, method: str) -> str | None:
    """The REST endpoint a redirect of `<endpoint><method>.json` names, or None when the
    target does not have that shape (then it is no domain change we understand)."""
    parts = urlsplit(location)
    for suffix in (f"/{method}.json", f"/{method}"):
        if parts.path.endswith(suffix):
            path = parts.path[: -len(suffix)] + "/"
            return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return None


def _same_endpoint(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def refusal(info: AppInfo, *, client_id: str, member_id: str, endpoint: str) -> str | None:
    """None when `info` vouches that the portal now lives at `endpoint`; else the reason.
    The same judgement as an install's (`shared.oauth.judge`), the endpoint in place of the
    domain that is being learnt."""
    refuted = judge(info, client_id=client_id, member_id=member_id, domain=None, version=None)
    if refuted is not None:
        return refuted.reason
    if not _same_endpoint(info.client_endpoint, endpoint):
        return "app.info names another endpoint"
    return None


class Relocator:
    def __init__(
        self, settings: Settings, tokens: TokenStore, transport: Transport, oauth: OAuthClient
    ) -> None:
        self._settings = settings
        self._tokens = tokens
        self._transport = transport
        self._oauth = oauth

    async def follow(self, portal: Portal, location: str, method: str) -> None:
        """Confirm the move `location` announces and update the record, or raise."""
        member_id = portal.member_id
        endpoint = moved_endpoint(location, method)
        if endpoint is None:
            self._refuse(member_id, host_of(location), "redirect to an address that is no REST endpoint")
        new_host = host_of(endpoint)
        if portal.webhook_url:
            self._refuse(member_id, new_host, "inbound-webhook portal moved: add it again with its new URL")
        await self._transport.check(endpoint, (new_host,))  # raises OutboundBlocked
        info = await self._oauth.app_info(portal.open_access(self._tokens.cipher))
        if isinstance(info, Refuted) and info.reason == "expired_token":
            # The move is no reason to doubt a token that merely expired: renew it, ask again.
            portal = await self._tokens.refresh(portal)
            info = await self._oauth.app_info(portal.open_access(self._tokens.cipher))
        if isinstance(info, Unreachable):
            raise ApiError(AUTH_SERVER_UNREACHABLE, "cannot confirm the portal's new domain")
        if not isinstance(info, AppInfo):
            self._refuse(member_id, new_host, f"app.info refused the token: {info.reason}")
        reason = refusal(
            info, client_id=self._settings.client_id or "", member_id=member_id, endpoint=endpoint
        )
        if reason is not None:
            self._refuse(member_id, new_host, reason)
        await self._tokens.update_fields(
            member_id, {"client_endpoint": info.client_endpoint, "domain": info.domain}
        )
        security_event("portal_moved", member_id=member_id, old_host=portal.domain, new_host=new_host)
        log(_log, logging.WARNING, "portal moved", member_id=member_id, host=new_host)

    @staticmethod
    def _refuse(member_id: str, new_host: str, reason: str) -> NoReturn:
        security_event("portal_move_refused", member_id=member_id, new_host=new_host, reason=reason)
        raise OutboundBlocked("PORTAL_MOVE_REFUSED", reason)
