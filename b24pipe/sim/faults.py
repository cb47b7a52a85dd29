"""Fault switches of one portal, set through the control API.

Counted faults (`rest_500`, `rest_html`, `rest_drop`) hit the next N REST requests (of
`fault_methods` only, when given) and then switch themselves off, so a test gets exactly
the failures it asked for. Per portal, so tests sharing one simulator never see each
other's faults.

The two OAuth timing faults cut a refresh at the two points that matter: `oauth_delay`
holds the request before the server looks at it (a caller that gives up or dies meanwhile
leaves its refresh token untouched: the server drops requests whose client is gone, as a
PHP server aborts on a closed connection); `oauth_hold` holds the answer after the new pair
was issued and the used refresh token killed (a caller that dies meanwhile has lost the
pair).

Lost answers: `rest_commit_drop` (the next N requests) and `rest_commit_drop_rate` (each
request with that probability) run the method, commit its changes and send its events, then
close the connection without the answer; with `rest_commit_hang` seconds set, the answer is
held that long first (a caller with a shorter timeout times out). The write happened; the
caller cannot know. `rest_slow` makes every request take that long to run, between the
lookup of its `Idempotency-Key` and the storing of its answer: a second request with the key
meanwhile runs too, as on Bitrix24.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

RestFault = Literal["500", "html", "drop"]


@dataclass
class Faults:
    rest_500: int = 0  # next N requests: HTTP 500 INTERNAL_SERVER_ERROR
    rest_html: int = 0  # next N requests: an HTML 502 page instead of JSON
    rest_drop: int = 0  # next N requests: connection closed without an answer
    rest_delay: float = 0.0  # seconds added before every REST answer
    rest_commit_drop: int = 0  # next N requests: run and committed, then dropped without the answer
    rest_commit_drop_rate: float = 0.0  # share of requests run and committed, then dropped (0..1)
    rest_commit_hang: float = 0.0  # seconds a lost answer is held before the connection is dropped
    rest_slow: float = (
        0.0  # seconds each request runs: after its Idempotency-Key is looked up, before it is done
    )
    fault_methods: list[str] = field(default_factory=list)
    oauth_down: bool = False  # the authorization server answers 503 with an HTML page
    oauth_delay: float = 0.0  # seconds before the authorization server handles a request
    oauth_hold: float = 0.0  # seconds it holds a token answer after issuing the new pair
    event_reorder: bool = False  # deliver events queued within `reorder_window` in reverse order
    reorder_window: float = 0.2
    event_duplicate: bool = False  # every event is delivered twice
    echo_before_answer: bool = False  # events of a REST write arrive before its answer
    event_delay: float = 0.0  # seconds before each event delivery
    event_timeout: float = 5.0  # a handler slower than this has lost the event

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update; unknown names or wrong types raise ValueError, changing nothing."""
        known = {f.name: f for f in fields(self)}
        current = asdict(self)
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}")
            expected = type(current[name])
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ValueError(f"fault {name!r} must be {expected.__name__}")
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"fault {name!r} must not be negative")
            current[name] = value
        if current["rest_commit_drop_rate"] > 1:
            raise ValueError("fault 'rest_commit_drop_rate' must be at most 1")
        for name, value in current.items():
            setattr(self, name, value)

    def take_rest_fault(self, method: str) -> RestFault | None:
        if self.fault_methods and method not in self.fault_methods:
            return None
        if self.rest_drop:
            self.rest_drop -= 1
            return "drop"
        if self.rest_html:
            self.rest_html -= 1
            return "html"
        if self.rest_500:
            self.rest_500 -= 1
            return "500"
        return None

    def take_commit_fault(self, method: str) -> bool:
        """Whether this request, once run and committed, loses its answer."""
        if self.fault_methods and method not in self.fault_methods:
            return False
        if self.rest_commit_drop:
            self.rest_commit_drop -= 1
            return True
        return self.rest_commit_drop_rate > 0 and random.random() < self.rest_commit_drop_rate

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
