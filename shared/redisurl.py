"""`REDIS_URL`, read once: a plain server (`redis://`, `rediss://`, `unix://`) or a
Sentinel-managed one, `redis+sentinel://[user:password@]host1:port1[,host2:port2...]/<master>[/<db>]`
(`rediss+sentinel://` with TLS to the sentinels and the primary).

Pure parsing, no connection: the settings validate the URL at start-up with it (a malformed
one is one line and exit 2 for every command), and `shared.redisconn` builds clients from
what it returns. The user and password, when given, are the primary's (the sentinels are
asked without credentials, as most deployments run them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

PLAIN_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelTarget:
    """Where Sentinel-managed Redis is: the sentinels, the primary's name, the database."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def rq_config(self) -> dict[str, Any]:
        """RQ's `SENTINEL` settings dict (RQ reads Sentinel only from a config file)."""
        config: dict[str, Any] = {
            "INSTANCES": [list(address) for address in self.sentinels],
            "MASTER_NAME": self.master,
            "DB": self.db,
            "SOCKET_TIMEOUT": 5,
            "SSL": self.tls,
        }
        if self.username:
            config["USERNAME"] = self.username
        if self.password:
            config["PASSWORD"] = self.password
        return config


def parse_redis_url(url: str) -> SentinelTarget | None:
    """None for a plain URL (valid for redis-py's `from_url`), the target for a Sentinel URL.
    Raises ValueError with a message fit for one line (never the password)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("must look like redis://host:port/db or redis+sentinel://host:port/master")
    if scheme in PLAIN_SCHEMES:
        _check_plain(url)
        return None
    if scheme not in SENTINEL_SCHEMES:
        allowed = ", ".join(f"{name}://" for name in (*PLAIN_SCHEMES, *SENTINEL_SCHEMES))
        raise ValueError(f"unknown scheme {scheme}:// (expected one of {allowed})")
    authority, _, path = rest.partition("/")
    credentials, at, hosts = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_address(part) for part in hosts.split(","))
    parts = [part for part in path.split("?")[0].split("/") if part]
    if not parts or len(parts) > 2:
        raise ValueError("a Sentinel URL needs the primary's name after the hosts: .../<master>[/<db>]")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ValueError(f"database must be a number, not {parts[1]!r}")
        db = int(parts[1])
    return SentinelTarget(sentinels, unquote(parts[0]), db, username, password, scheme.startswith("rediss"))


def _address(text: str) -> tuple[str, int]:
    host, colon, port = text.strip().rpartition(":")
    if not colon:
        host, port = text.strip(), str(DEFAULT_SENTINEL_PORT)
    host = host.strip("[]")
    if not host:
        raise ValueError(f"sentinel address {text!r} has no host")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"sentinel address {text!r} has an invalid port")
    return host, int(port)


def _check_plain(url: str) -> None:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("invalid port") from None
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("no host")
    if port == 0:
        raise ValueError("invalid port")
    db = parts.path.strip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise ValueError(f"database must be a number, not {db!r}")
