"""Asking the authorization server whether a token is what it claims to be.

Installs and updates are trusted only when `app.info` on the authorization server
(`B24_OAUTH_URL`, never an endpoint named in the request) names our `client_id`, the
portal the request names, an installed app (and for updates the same version), and
`user.admin` on the portal's endpoint *from that answer* says the token's user is an
admin. Uninstalls are acted on only once the stored tokens stop working.

Every call goes through `HostPolicy`; secrets travel in POST bodies, never in URLs, and
no redirect is followed: a redirect would have us send the client secret and a refresh
token to an address the configuration never named. Outcomes are typed: `Verified`,
`Refuted(reason)` (the server answered and said no: never retry) and `Unreachable(reason)`
(timeout, 5xx, network: try again later); a refresh grant can also be `Unconfigured` (our
own settings cannot ask for it: an operator must act, retrying cannot help). Reasons are
fixed phrases, Bitrix24 error codes or `HTTP_<status>`, never secrets.

This is the only OAuth grant client: installs and updates (`ingress.lifecycle`), their
re-verification and uninstall confirmation (`workers.portals.lifecycle`), a portal's move
(`workers.rest.relocate`) and every token refresh (`workers.rest.tokens`) go through it.

Parsing and judging answers are pure functions (`parse_app_info`, `judge`,
`parse_refresh`), tested without a network; `OAuthClient` is the I/O around them.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import orjson

from shared.outbound import HostPolicy, OutboundRefused, Resolver, system_resolve
from shared.settings import Settings

# Bitrix24 error codes that mean "this token will never work again".
_DEAD_TOKEN = frozenset(
    {"invalid_token", "NO_AUTH_FOUND", "invalid_grant", "invalid_client", "PORTAL_DELETED"}
)
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class AppInfo:
    """What the authorization server vouches for about one token (the `app.info` answer)."""

    client_id: str
    scope: str
    user_id: int
    installed: bool
    version: str
    domain: str
    member_id: str
    client_endpoint: str
    status: str


@dataclass(frozen=True)
class Verified:
    info: AppInfo


@dataclass(frozen=True)
class Refuted:
    reason: str


@dataclass(frozen=True)
class Unreachable:
    reason: str


Verification = Verified | Refuted | Unreachable


@dataclass(frozen=True)
class Unconfigured:
    """The grant cannot be asked for with these settings (no client credentials, or the
    host policy refuses the authorization server): an operator must act. `code` names
    which (`NO_CLIENT_CREDENTIALS`, `OUTBOUND_REFUSED`)."""

    code: str
    reason: str


DEFAULT_LIFETIME = 3600  # Bitrix24's access tokens live an hour; assumed when an answer names none


@dataclass(frozen=True)
class Refreshed:
    """A refresh that worked: the new pair (the used refresh token is now dead) and what
    the answer says about the portal.

    `expires` is the one expiry every caller stores: unix seconds by *our* clock,
    `issued_at` (when the answer arrived) plus the answer's `expires_in`. Bitrix24's own
    `expires` is by its clock, and the refresh margin is measured on ours."""

    access_token: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)
    issued_at: int = 0
    expires: int = 0
    member_id: str = ""
    client_endpoint: str = ""
    user_id: int = 0


RefreshResult = Refreshed | Refuted | Unreachable | Unconfigured


def _truthy(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().upper() in ("1", "Y", "TRUE")


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _error_code(body: object) -> str:
    """Bitrix24's error code from an error answer, or a fixed phrase: safe to log."""
    if isinstance(body, dict):
        code = body.get("error")
        if isinstance(code, str) and _ERROR_CODE.match(code):
            return code
    return "unexpected answer"


def same_domain(a: str, b: str) -> bool:
    return a.strip().lower().rstrip(".") == b.strip().lower().rstrip(".")


def parse_app_info(body: object) -> AppInfo | Refuted:
    """The `result` of an `app.info` answer, or why it is not one."""
    result = body.get("result") if isinstance(body, dict) else None
    install = result.get("install") if isinstance(result, dict) else None
    if not isinstance(result, dict) or not isinstance(install, dict):
        return Refuted(
            _error_code(body) if isinstance(body, dict) and "error" in body else "malformed app.info"
        )
    try:
        user_id = int(result.get("user_id") or 0)
    except (TypeError, ValueError):
        return Refuted("malformed app.info")
    return AppInfo(
        client_id=_text(result.get("client_id")),
        scope=_text(result.get("scope") or install.get("scope")),
        user_id=user_id,
        installed=_truthy(install.get("installed")),
        version=_text(install.get("version")),
        domain=_text(install.get("domain")),
        member_id=_text(install.get("member_id")),
        client_endpoint=_text(install.get("client_endpoint")),
        status=_text(install.get("status")),
    )


def parse_refresh(status: int, body: object, issued_at: int) -> Refreshed | Refuted:
    """A refresh-token grant's answer: the new pair, or why there is none. A pair needs both
    tokens (storing an answer without a refresh token would lose the portal: the used one
    is dead). The reason is Bitrix24's error code, else `HTTP_<status>`."""
    if (
        not isinstance(body, dict)
        or status != 200
        or not body.get("access_token")
        or not body.get("refresh_token")
    ):
        return Refuted(_error_code(body) if isinstance(body, dict) and "error" in body else f"HTTP_{status}")
    lifetime = _int(body.get("expires_in"))
    return Refreshed(
        access_token=_text(body.get("access_token")),
        refresh_token=_text(body.get("refresh_token")),
        issued_at=issued_at,
        expires=issued_at + (lifetime if lifetime > 0 else DEFAULT_LIFETIME),
        member_id=_text(body.get("member_id")),
        client_endpoint=_text(body.get("client_endpoint")),
        user_id=max(0, _int(body.get("user_id"))),
    )


def judge(
    info: AppInfo, *, client_id: str, member_id: str, domain: str | None, version: str | None
) -> Refuted | None:
    """None when `info` vouches for this request; otherwise the first reason it does not.
    `domain` None: the domain is what is being learnt (a portal that moved), not judged."""
    if info.client_id != client_id:
        return Refuted("app.info names another client_id")
    if info.member_id != member_id:
        return Refuted("app.info names another member_id")
    if domain is not None and (not domain or not same_domain(info.domain, domain)):
        return Refuted("app.info names another domain")
    if not info.installed:
        return Refuted("app.info says not installed")
    if version is not None and info.version != version:
        return Refuted("app.info names another version")
    if not info.client_endpoint:
        return Refuted("app.info names no client_endpoint")
    return None


class _Answer:
    """One HTTP answer: status and parsed JSON body (None when not JSON)."""

    def __init__(self, status: int, body: object) -> None:
        self.status = status
        self.body = body


class OAuthClient:
    """The calls to the authorization server and to a portal's verified endpoint."""

    def __init__(
        self, settings: Settings, session: aiohttp.ClientSession, resolve: Resolver = system_resolve
    ) -> None:
        self._settings = settings
        self._session = session
        self._policy = HostPolicy.from_settings(settings)
        self._resolve = resolve
        self._timeout = aiohttp.ClientTimeout(total=settings.http_timeout)

    async def _post(
        self, url: str, form: dict[str, str], portal_hosts: tuple[str, ...]
    ) -> _Answer | Unreachable:
        """POST a form (secrets in the body), after the host policy allowed the URL.

        Raises `OutboundRefused` when the policy refuses it."""
        await asyncio.to_thread(self._policy.check_url, url, portal_hosts, self._resolve)
        try:
            async with self._session.post(
                url, data=form, timeout=self._timeout, allow_redirects=False
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Unreachable(f"{urlsplit(url).hostname}: {type(exc).__name__}")
        if status >= 500 or status == 429:
            return Unreachable(f"{urlsplit(url).hostname}: HTTP {status}")
        try:
            body: object = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        return _Answer(status, body)

    async def app_info(self, access_token: str) -> AppInfo | Refuted | Unreachable:
        """`app.info` on the authorization server for this access token."""
        url = f"{self._settings.oauth_url}/rest/app.info"
        try:
            answer = await self._post(url, {"auth": access_token}, ())
        except OutboundRefused as exc:
            return Unreachable(f"authorization server refused by host policy: {exc}")
        if isinstance(answer, Unreachable):
            return answer
        if answer.status != 200:
            return Refuted(_error_code(answer.body))
        return parse_app_info(answer.body)

    async def is_admin(self, info: AppInfo, access_token: str) -> bool | Refuted | Unreachable:
        """`user.admin` on the portal endpoint the authorization server named."""
        url = f"{info.client_endpoint.rstrip('/')}/user.admin.json"
        try:
            answer = await self._post(url, {"auth": access_token}, (info.domain,))
        except OutboundRefused as exc:
            return Refuted(f"portal endpoint refused: {exc}")
        if isinstance(answer, Unreachable):
            return answer
        if answer.status != 200 or not isinstance(answer.body, dict) or "result" not in answer.body:
            return Refuted(_error_code(answer.body))
        return answer.body["result"] is True or _truthy(answer.body["result"])

    async def verify(
        self, *, member_id: str, domain: str, access_token: str, version: str | None = None
    ) -> Verification:
        """The whole check an install or update must pass (see the module docstring)."""
        client_id = self._settings.client_id
        if not client_id:
            return Refuted("B24_CLIENT_ID is not configured")
        if not access_token:
            return Refuted("no access token")
        info = await self.app_info(access_token)
        if not isinstance(info, AppInfo):
            return info
        refusal = judge(info, client_id=client_id, member_id=member_id, domain=domain, version=version)
        if refusal is not None:
            return refusal
        admin = await self.is_admin(info, access_token)
        if admin is True:
            return Verified(info)
        if admin is False:
            return Refuted("token user is not an admin")
        return admin

    async def refresh(self, refresh_token: str) -> RefreshResult:
        """One refresh-token grant (POST body: no secret in the URL)."""
        secret = self._settings.secret()
        if not self._settings.client_id or not secret:
            return Unconfigured("NO_CLIENT_CREDENTIALS", "B24_CLIENT_ID/B24_CLIENT_SECRET are not set")
        form = {
            "grant_type": "refresh_token",
            "client_id": self._settings.client_id,
            "client_secret": secret,
            "refresh_token": refresh_token,
        }
        try:
            answer = await self._post(f"{self._settings.oauth_url}/oauth/token/", form, ())
        except OutboundRefused as exc:
            return Unconfigured("OUTBOUND_REFUSED", f"authorization server refused by host policy: {exc}")
        if isinstance(answer, Unreachable):
            return answer
        return parse_refresh(answer.status, answer.body, int(time.time()))

    async def uninstall_confirmed(
        self, access_token: str, refresh_token: str
    ) -> bool | Refreshed | Unreachable:
        """Does Bitrix24 confirm these tokens no longer work (the app was uninstalled)?

        True: confirmed (app.info or the refresh was refused with a dead-token code, or
        app.info says not installed). False: not confirmed (the token still works, or the
        answer proves nothing). `Refreshed`: the access token had expired but the refresh
        worked, so the app is still installed; the caller must store the new pair at once
        (the used refresh token is dead now)."""
        info = await self.app_info(access_token) if access_token else Refuted("expired_token")
        if isinstance(info, Unreachable):
            return info
        if isinstance(info, AppInfo):
            return not info.installed
        if info.reason in _DEAD_TOKEN:
            return True
        if info.reason != "expired_token" or not refresh_token:
            return False
        refreshed = await self.refresh(refresh_token)
        if isinstance(refreshed, Refuted):
            return refreshed.reason in _DEAD_TOKEN
        if isinstance(refreshed, Unconfigured):
            return False  # nothing learnt about the tokens
        return refreshed


def _int(value: object) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0
