"""What Bitrix24 POSTs to the ingress, validated: the `Delivery` and its `auth` block.

A delivery still carries secrets (application token, sometimes OAuth tokens); it never
leaves the ingress process. `queued_form()` is the stripped form that is queued, `to_event()`
the same as a model.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.events import Event, entity_of, fingerprint

_NAME = r"^[A-Za-z0-9_.:]{1,128}$"
_MEMBER = r"^[A-Za-z0-9_.-]{1,128}$"


def _int_or_none(value: object) -> object:
    if value in (None, ""):
        return None
    return value


class DeliveryAuth(BaseModel):
    model_config = ConfigDict(extra="ignore", str_max_length=4096)

    member_id: str = Field(pattern=_MEMBER)
    application_token: str | None = Field(default=None, repr=False)
    access_token: str | None = Field(default=None, repr=False)
    refresh_token: str | None = Field(default=None, repr=False)
    expires: int | None = None
    expires_in: int | None = None
    scope: str | None = None
    domain: str | None = None
    server_endpoint: str | None = None
    client_endpoint: str | None = None
    user_id: int | None = None
    status: str | None = None

    _nullable_ints = field_validator("expires", "expires_in", "user_id", mode="before")(_int_or_none)


class Delivery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event: str = Field(pattern=_NAME)
    event_handler_id: str | None = Field(default=None, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)
    ts: int = 0
    auth: DeliveryAuth

    @field_validator("event")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("event_handler_id", mode="before")
    @classmethod
    def _handler_id(cls, value: object) -> object:
        return None if value in (None, "") else str(value) if isinstance(value, int) else value

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: object) -> object:
        return 0 if value in (None, "") else value

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, value: object) -> object:
        # PHP sends an empty array as nothing at all, or a list for numeric keys
        if value in (None, "", []):
            return {}
        if isinstance(value, list):
            return {str(index): item for index, item in enumerate(value)}
        return value

    def event_id(self) -> str:
        auth = self.auth
        return fingerprint(
            auth.member_id, self.event, self.event_handler_id, self.ts, self.data, auth.user_id
        )

    def queued_form(self, received_at: float | None = None) -> dict[str, Any]:
        """What is queued: `Event.model_dump(mode="json")` of `to_event()`, built without
        the model (the ingress's hot path; the tests hold the two equal). No token of any
        kind, only what handlers need."""
        entity_type, entity_id = entity_of(self.event, self.data)
        return {
            "id": self.event_id(),
            "name": self.event,
            "member_id": self.auth.member_id,
            "domain": self.auth.domain or "",
            "user_id": self.auth.user_id,
            "entity_id": entity_id,
            "entity_type": entity_type,
            "data": self.data,
            "ts": self.ts,
            "attempt": 1,
            "handler_id": self.event_handler_id,
            "received_at": received_at if received_at is not None else time.time(),
        }

    def to_event(self, received_at: float | None = None) -> Event:
        """The queued form as the model handlers see."""
        return Event.model_validate(self.queued_form(received_at))
