"""Handlers: which business functions run for which Bitrix24 event.

Applications register with `@handler("ONCRMDEALUPDATE")` (several handlers per event are
fine; `@handler("*")` is a catch-all that sees every event) in modules named by
`B24PIPE_HANDLERS`, which the worker imports at start. A handler's id is its module and
qualified name: retries are tracked per (event, handler id), so the id must be stable
across processes and restarts, which a module path is.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.errors import ConfigurationError
from shared.events import LIFECYCLE_EVENTS as _LIFECYCLE

CATCH_ALL = "*"

F = TypeVar("F", bound=Callable[..., Any])


class HandlerImportError(ConfigurationError):
    """A module named in B24PIPE_HANDLERS could not be imported (one line, no traceback)."""


@dataclass(frozen=True)
class Handler:
    id: str
    event: str
    fn: Callable[..., Any]
    is_async: bool
    coalesce: bool = False
    batch: bool = False
    delay: float | None = None  # None: B24PIPE_COALESCE_DELAY

    @property
    def grouped(self) -> bool:
        """Whether its events go through a coalescing or batch group (workers.guards.coalesce)."""
        return self.coalesce or self.batch


_by_event: dict[str, list[Handler]] = {}


def handler(
    event: str = CATCH_ALL, *, coalesce: bool = False, batch: bool = False, delay: float | None = None
) -> Callable[[F], F]:
    """Register `fn(event, b24)` for the Bitrix24 event `event` (case-insensitive), or for
    every event with "*". `async def` handlers are awaited and get an awaitable client.

    `coalesce=True`: update events of one entity waiting in the queue run the handler once,
    on the newest. `batch=True`: the handler is called as `fn(events, b24)` with a portal's
    waiting events as a list. `delay`: seconds the first event of a group waits for the rest
    (default `B24PIPE_COALESCE_DELAY`). All off by default (see workers.guards.coalesce)."""
    name = event.strip().upper()
    if not name:
        raise ValueError("handler(): the event name is empty")
    if delay is not None and (not (coalesce or batch) or not 0 <= delay <= 3600):
        raise ValueError("handler(): delay needs coalesce=True or batch=True and 0 <= delay <= 3600")

    def register(fn: F) -> F:
        entry = Handler(
            id=f"{fn.__module__}.{fn.__qualname__}",
            event=name,
            fn=fn,
            is_async=inspect.iscoroutinefunction(fn),
            coalesce=coalesce,
            batch=batch,
            delay=delay,
        )
        bucket = _by_event.setdefault(name, [])
        if all(existing.id != entry.id for existing in bucket):
            bucket.append(entry)
        return fn

    return register


def handlers_for(event_name: str) -> list[Handler]:
    """The handlers of one event, specific ones first, then the catch-alls."""
    name = event_name.upper()
    return [*_by_event.get(name, ()), *(_by_event.get(CATCH_ALL, ()) if name != CATCH_ALL else ())]


def registered_events() -> frozenset[str]:
    """Event names with a specific handler: what `event.bind` registers, and metric labels."""
    return frozenset(name for name, bucket in _by_event.items() if bucket and name != CATCH_ALL)


def registered() -> dict[str, list[str]]:
    """Every registration, event name to handler ids (what a worker logs it loaded)."""
    return {name: [entry.id for entry in bucket] for name, bucket in sorted(_by_event.items()) if bucket}


def event_label(event_name: str) -> str:
    """A metrics label that can only take known values (never a caller-chosen string)."""
    name = event_name.upper()
    if name in _by_event or name in _LIFECYCLE:
        return name
    return "other"


def load_modules(modules: Iterable[str]) -> None:
    """Import the handler modules; any failure becomes one line naming the module."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any import-time error is the user's configuration problem
            raise HandlerImportError(
                f"B24PIPE_HANDLERS: cannot import {module!r}: {type(exc).__name__}: {exc}"
            ) from None


def clear() -> None:
    """Forget every registration (tests and benchmarks that register handlers in-process)."""
    _by_event.clear()
