"""The portal record: what b24pipe knows about one Bitrix24 portal (one `member_id`).

Stored as a Redis hash at `Keys.portal(member_id)`; this module holds the pure mapping
between the hash and `Portal`, so the asyncio ingress and the synchronous workers and CLI
read and write it the same way. OAuth tokens are kept encrypted (`shared.crypto`), with the
portal and field name as associated data.

Accepted application tokens live beside the record, in `Keys.app_tokens(member_id)`:
digest -> `{"kind": "app"|"webhook"|"grace", "expires_at": unix seconds or 0}`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from shared.crypto import TokenCipher
from shared.settings import Settings


def as_text(value: bytes | str) -> str:
    """Redis answers bytes unless the client decodes; both are accepted everywhere."""
    return value.decode() if isinstance(value, bytes) else value


class Status(StrEnum):
    ACTIVE = "active"  # verified; events accepted and processed
    PENDING = "pending"  # install seen, authorization server not yet reached
    REAUTH = "reauth"  # refresh said invalid_grant: jobs parked until a new token arrives
    REVOKED = "revoked"  # operator revoked or uninstall confirmed: events get 401


@dataclass
class Portal:
    member_id: str
    domain: str
    client_endpoint: str = ""
    server_endpoint: str = ""
    status: Status = Status.ACTIVE
    scope: str = ""
    app_version: str = ""
    user_id: int = 0
    plan: str = ""  # rate plan name; empty = the configured default
    access_token: str = ""  # ciphertext
    refresh_token: str = ""  # ciphertext
    expires: int = 0  # access token expiry, unix seconds
    token_gen: int = 0  # bumped on every token change: compare-and-set and 401 re-reads use it
    webhook_url: str = ""  # ciphertext of an inbound-webhook base URL, for webhook portals
    auth_connector: str = ""  # passed on the app's writes: offline events bound with it skip them
    created_at: int = field(default_factory=lambda: int(time.time()))
    updated_at: int = field(default_factory=lambda: int(time.time()))
    last_used_at: int = 0
    reason: str = ""  # why the status is what it is (no secrets)

    def to_hash(self) -> dict[Any, str]:
        """The Redis hash (keys typed Any: redis-py's mapping key type is invariant)."""
        return {key: str(value) for key, value in asdict(self).items()}

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Portal:
        text = {as_text(k): as_text(v) for k, v in raw.items()}
        ints = {"user_id", "expires", "token_gen", "created_at", "updated_at", "last_used_at"}
        known = cls.__dataclass_fields__
        values: dict[str, object] = {}
        for key, value in text.items():
            if key not in known:
                continue
            if key in ints:
                values[key] = int(value or 0)
            elif key == "status":
                values[key] = Status(value)
            else:
                values[key] = value
        return cls(**values)  # type: ignore[arg-type]

    # --- tokens ------------------------------------------------------------------------
    def seal_tokens(self, cipher: TokenCipher, access: str, refresh: str, expires: int) -> None:
        self.access_token = cipher.encrypt(access, self.context("access_token")) if access else ""
        self.refresh_token = cipher.encrypt(refresh, self.context("refresh_token")) if refresh else ""
        self.expires = expires
        self.token_gen += 1
        self.updated_at = int(time.time())

    def open_access(self, cipher: TokenCipher) -> str:
        return cipher.decrypt(self.access_token, self.context("access_token")) if self.access_token else ""

    def open_refresh(self, cipher: TokenCipher) -> str:
        return cipher.decrypt(self.refresh_token, self.context("refresh_token")) if self.refresh_token else ""

    def open_webhook(self, cipher: TokenCipher) -> str:
        return cipher.decrypt(self.webhook_url, self.context("webhook_url")) if self.webhook_url else ""

    def context(self, field_name: str) -> str:
        return f"{self.member_id}:{field_name}"

    def public(self) -> dict[str, object]:
        """The record without ciphertexts: for `portals show`, `status --json` and logs."""
        shown = asdict(self)
        for secret in ("access_token", "refresh_token", "webhook_url"):
            shown[secret] = bool(shown[secret])
        shown["status"] = str(self.status)
        return shown


@dataclass(frozen=True)
class AcceptedToken:
    kind: str  # "app" | "webhook" | "grace"
    expires_at: int = 0  # 0 = no expiry

    def encode(self) -> bytes:
        return orjson.dumps({"kind": self.kind, "expires_at": self.expires_at})

    @classmethod
    def decode(cls, raw: bytes | str) -> AcceptedToken:
        value = orjson.loads(raw)
        return cls(kind=str(value.get("kind", "app")), expires_at=int(value.get("expires_at", 0)))

    def valid_at(self, now: float) -> bool:
        return self.expires_at == 0 or now < self.expires_at


def namespace_connector(settings: Settings) -> str:
    """The `auth_connector` a portal gets at install when offline events are configured and
    it has none: one per namespace (so each app's own writes stay out of its own offline
    queue), derived from the namespace so every process agrees without coordination."""
    if not settings.offline_events:
        return ""
    return "b24pipe-" + hashlib.sha256(settings.namespace.encode()).hexdigest()[:16]
