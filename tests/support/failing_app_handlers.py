"""An app whose handler always fails with a secret in its message (tests/workers/runner/test_devlogs.py)."""

from __future__ import annotations

from shared.events import Event
from workers import handler

# shaped like a Bitrix24 refresh token: what the log scrubbing must never let through
SECRET = "9f2c" * 12


@handler("ONCRMDEALUPDATE")
def explode(event: Event, b24: object) -> None:
    raise RuntimeError(f"cannot use refresh_token={SECRET} for deal {event.entity_id}")
