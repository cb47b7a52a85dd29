"""What Bitrix24 POSTs to the ingress, validated: the `Delivery` and its `auth` block.

A delivery still carries secrets (application token, sometimes OAuth tokens); it never
leaves the ingress process. `queued_form()` is the stripped form that is queued, `to_event()`
the same as a model.

`Plain` is the ingress's fast path to the same result for deliveries as Bitrix24's forms
send them (every value a string of the expected shape): checked by hand in a fraction of
the model's time, and `None` for anything else, which then goes through `Delivery` (whose
errors also make the 400's detail). The tests hold the two to the same answers.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.events import Event, entity_of, fingerprint

_NAME = r"^[A-Za-z0-9_.:]{1,128}$"
_MEMBER = r"^[A-Za-z0-9_.-]{1,128}$"
_MAX_AUTH_TEXT = 4096
_MAX_HANDLER_ID = 64
# Numbers are 64-bit signed, as PHP's are: anything wider is no Bitrix24 value (and would
# not fit the queued form's JSON), so the model refuses it with a 400.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


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
    expires: Int64 | None = None
    expires_in: Int64 | None = None
    scope: str | None = None
    domain: str | None = None
    server_endpoint: str | None = None
    client_endpoint: str | None = None
    user_id: Int64 | None = None
    status: str | None = None

    _nullable_ints = field_validator("expires", "expires_in", "user_id", mode="before")(_int_or_none)


class Delivery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event: str = Field(pattern=_NAME)
    event_handler_id: str | None = Field(default=None, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)
    ts: Int64 = 0
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

    def plain(self) -> Plain:
        """The fields the event path and the queued form need."""
        auth = self.auth
        return Plain(
            self.event,
            self.event_handler_id,
            self.data,
            self.ts,
            auth.member_id,
            auth.application_token,
            auth.domain,
            auth.user_id,
        )

    def event_id(self) -> str:
        return self.plain().event_id()

    def queued_form(self, received_at: float | None = None) -> dict[str, Any]:
        """What is queued: `Event.model_dump(mode="json")` of `to_event()`."""
        return self.plain().queued_form(received_at)

    def to_event(self, received_at: float | None = None) -> Event:
        """The queued form as the model handlers see."""
        return Event.model_validate(self.queued_form(received_at))


@dataclass(slots=True)
class Plain:
    """A delivery reduced to what the event path needs; `read` is the fast path."""

    event: str
    event_handler_id: str | None
    data: dict[str, Any]
    ts: int
    member_id: str
    application_token: str | None
    domain: str | None
    user_id: int | None

    @classmethod
    def read(cls, payload: dict[str, Any]) -> Plain | None:
        """What `Delivery.model_validate(payload).plain()` gives, for a delivery whose every
        value is a string of the expected shape (or the JSON types that need no conversion);
        None for anything else, including anything the model would refuse."""
        event, auth, data = payload.get("event"), payload.get("auth"), payload.get("data", _NO_DATA)
        if type(event) is not str or type(auth) is not dict or not _NAME_MATCH(event):
            return None
        if data is _NO_DATA:
            data = {}
        elif type(data) is not dict:
            return None
        handler_id = payload.get("event_handler_id")
        if handler_id == "":
            handler_id = None
        elif handler_id is not None and (type(handler_id) is not str or len(handler_id) > _MAX_HANDLER_ID):
            return None
        ts = _plain_int(payload.get("ts"), 0)
        member_id = auth.get("member_id")
        if ts is None or type(member_id) is not str or not _MEMBER_MATCH(member_id):
            return None
        for name, value in auth.items():
            kind = _AUTH_FIELDS.get(name)
            if kind is str and (type(value) is not str or len(value) > _MAX_AUTH_TEXT):
                return None
            if kind is int and _plain_int(value, None) is None and value != "":
                return None
        return cls(
            event.upper(),
            handler_id,
            data,
            ts,
            member_id,
            auth.get("application_token"),
            auth.get("domain"),
            _plain_int(auth.get("user_id"), None),
        )

    def event_id(self) -> str:
        return fingerprint(
            self.member_id, self.event, self.event_handler_id, self.ts, self.data, self.user_id
        )

    def queued_form(self, received_at: float | None = None) -> dict[str, Any]:
        """What is queued: `Event.model_dump(mode="json")` of the event, built without the
        model (the ingress's hot path; the tests hold the two equal). No token of any kind,
        only what handlers need."""
        entity_type, entity_id = entity_of(self.event, self.data)
        return {
            "id": self.event_id(),
            "name": self.event,
            "member_id": self.member_id,
            "domain": self.domain or "",
            "user_id": self.user_id,
            "entity_id": entity_id,
            "entity_type": entity_type,
            "data": self.data,
            "ts": self.ts,
            "attempt": 1,
            "handler_id": self.event_handler_id,
            "received_at": received_at if received_at is not None else time.time(),
            "source": "online",
        }


_NO_DATA: dict[str, Any] = {}
# fullmatch: `$` alone would also match before a trailing newline, which the model refuses
_NAME_MATCH = re.compile(_NAME).fullmatch
_MEMBER_MATCH = re.compile(_MEMBER).fullmatch
_DIGITS = re.compile(r"0|[1-9][0-9]{0,17}")  # integers the model reads the same way
# DeliveryAuth's fields by the type the fast path accepts for them (others are ignored,
# as the model ignores them)
_AUTH_FIELDS: dict[str, type] = {
    name: int if name in ("expires", "expires_in", "user_id") else str for name in DeliveryAuth.model_fields
}


def _plain_int(value: object, absent: int | None) -> int | None:
    """`absent` for a missing or empty value, the number for canonical digits or an int,
    None otherwise."""
    if value is None or value == "":
        return absent
    if type(value) is int:
        return value if -(2**63) <= value < 2**63 else None  # the model's 400
    if type(value) is str and _DIGITS.fullmatch(value):
        return int(value)
    return None
