"""Where b24pipe may send requests: the outbound host policy (no SSRF).

Allowed destinations are the authorization server (`B24_OAUTH_URL`), each portal's own
verified host (from the authorization server's `app.info` answer, never from a request),
and the patterns in `B24PIPE_ALLOWED_HOSTS`. HTTPS is required unless
`B24PIPE_ALLOW_HTTP=1`. A host that resolves to a private, loopback, link-local or
otherwise non-public address is refused unless it is listed in `B24PIPE_ALLOWED_HOSTS`
itself (being a portal's host is not enough: a portal record must not be a way in).
Redirect targets go through the same check.

`check_url` is pure apart from DNS resolution, which callers can pass in (`resolve`) so
the decision is testable without a network.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.errors import B24PipeError
from shared.settings import Settings

Resolver = Callable[[str], list[str]]


class OutboundRefused(B24PipeError):
    """A destination the policy does not allow. The text names the host, never a secret."""


def system_resolve(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        raise OutboundRefused(f"cannot resolve host {host}") from None
    return sorted({str(info[4][0]) for info in infos})


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return ip.is_global and not ip.is_multicast


def _matches(host: str, patterns: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, pattern.lower().rstrip(".")) for pattern in patterns)


@dataclass(frozen=True)
class HostPolicy:
    oauth_host: str
    allowed: tuple[str, ...]
    allow_http: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        return cls(
            oauth_host=(urlsplit(settings.oauth_url).hostname or "").lower(),
            allowed=tuple(settings.allowed_hosts),
            allow_http=settings.allow_http,
        )

    def check_url(
        self, url: str, portal_hosts: Iterable[str] = (), resolve: Resolver = system_resolve
    ) -> str:
        """Return the URL if it may be called; raise `OutboundRefused` otherwise."""
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http"):
            raise OutboundRefused(f"scheme {parts.scheme or '(none)'} is not allowed")
        if parts.scheme == "http" and not self.allow_http:
            raise OutboundRefused("http:// is refused (set B24PIPE_ALLOW_HTTP=1 for local testing only)")
        if parts.username or parts.password:
            raise OutboundRefused("credentials in URLs are refused")
        host = (parts.hostname or "").lower()
        if not host:
            raise OutboundRefused("URL has no host")
        listed = _matches(host, self.allowed)
        known = host == self.oauth_host or _matches(host, portal_hosts)
        if not (listed or known):
            raise OutboundRefused(
                f"host {host} is not the authorization server, a verified portal or allowed"
            )
        if not listed:
            for address in resolve(host):
                if not _is_public(address):
                    raise OutboundRefused(f"host {host} resolves to a non-public address")
        return url
