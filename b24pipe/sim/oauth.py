"""The authorization server's token book: codes, access tokens, rotating refresh tokens.

Every refresh issues a new pair and kills both the refresh token used and the access token
issued with it; using a dead refresh token again is `invalid_grant` (and counted, since a
pipeline that does it has lost a race). Expiry is read from the owning portal's clock, so
the caller passes `now`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

REFRESH_LIFETIME = 180 * 86400
CODE_LIFETIME = 30


class OAuthError(Exception):
    def __init__(self, code: str, description: str, status: int = 400) -> None:
        super().__init__(code)
        self.code = code
        self.description = description
        self.status = status


@dataclass
class AccessGrant:
    member_id: str
    user_id: int
    expires_at: float
    refresh_token: str | None  # the refresh token issued with it (None: event-only token)


@dataclass
class RefreshGrant:
    member_id: str
    user_id: int
    expires_at: float
    access_token: str


@dataclass
class CodeGrant:
    member_id: str
    user_id: int
    expires_at: float


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires: int
    expires_in: int
    user_id: int
    member_id: str


def _token() -> str:
    return secrets.token_hex(35)


class TokenBook:
    def __init__(self) -> None:
        self.access: dict[str, AccessGrant] = {}
        self.refresh: dict[str, RefreshGrant] = {}
        self.codes: dict[str, CodeGrant] = {}
        self.used_refresh: dict[str, str] = {}  # dead refresh token -> member_id

    def issue(self, member_id: str, user_id: int, now: float, ttl: int) -> TokenPair:
        access, refresh = _token(), _token()
        self.access[access] = AccessGrant(member_id, user_id, now + ttl, refresh)
        self.refresh[refresh] = RefreshGrant(member_id, user_id, now + REFRESH_LIFETIME, access)
        return TokenPair(access, refresh, int(now + ttl), ttl, user_id, member_id)

    def issue_access_only(self, member_id: str, user_id: int, now: float, ttl: int) -> str:
        """The token an event carries: usable for REST, but it comes without a refresh token."""
        access = _token()
        self.access[access] = AccessGrant(member_id, user_id, now + ttl, None)
        return access

    def new_code(self, member_id: str, user_id: int, now: float) -> str:
        code = secrets.token_hex(16)
        self.codes[code] = CodeGrant(member_id, user_id, now + CODE_LIFETIME)
        return code

    def code_owner(self, code: str) -> str | None:
        grant = self.codes.get(code)
        return grant.member_id if grant else None

    def refresh_owner(self, refresh_token: str) -> str | None:
        grant = self.refresh.get(refresh_token)
        if grant:
            return grant.member_id
        return self.used_refresh.get(refresh_token)

    def exchange_code(self, code: str, now: float, ttl: int) -> TokenPair:
        grant = self.codes.pop(code, None)
        if grant is None or grant.expires_at < now:
            raise OAuthError("invalid_grant", "Invalid authorization code")
        return self.issue(grant.member_id, grant.user_id, now, ttl)

    def rotate(self, refresh_token: str, now: float, ttl: int) -> TokenPair:
        grant = self.refresh.pop(refresh_token, None)
        if grant is None or grant.expires_at < now:
            raise OAuthError("invalid_grant", "Invalid refresh token")
        self.access.pop(grant.access_token, None)
        self.used_refresh[refresh_token] = grant.member_id
        return self.issue(grant.member_id, grant.user_id, now, ttl)

    def expire_portal(self, member_id: str, now: float) -> int:
        """Make every access token of the portal expired now (refresh tokens keep working)."""
        count = 0
        for grant in self.access.values():
            if grant.member_id == member_id:
                grant.expires_at = min(grant.expires_at, now - 1)
                count += 1
        return count

    def revoke_portal(self, member_id: str) -> None:
        """Uninstall: no token of the portal works any more."""
        self.access = {k: g for k, g in self.access.items() if g.member_id != member_id}
        self.refresh = {k: g for k, g in self.refresh.items() if g.member_id != member_id}
        self.codes = {k: g for k, g in self.codes.items() if g.member_id != member_id}
