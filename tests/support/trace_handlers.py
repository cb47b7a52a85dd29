"""A handler the tracing test runs in its own process: one REST call per event."""

from __future__ import annotations

from shared.events import Event
from workers import handler
from workers.rest.client import B24


@handler("ONTESTTRACE")
def traced(event: Event, b24: B24) -> None:
    b24.call("profile")
