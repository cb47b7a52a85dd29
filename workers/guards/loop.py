"""Loop guards: echo suppression and the loop breaker.

Echo suppression. Bitrix24 sends the app the events its own writes cause. The REST client
marks every write before sending it (`EchoMarker.mark` / `EchoGuard.mark`): one counted
mark per expected echo, keyed (portal, entity, event, writer user), each mark with its own
TTL (`B24PIPE_ECHO_TTL`; it must outlast the queue's wait, since marks are consumed at
dispatch). At dispatch, `EchoGuard.consume(event)` atomically takes one live mark for the
event's (portal, entity, event, user): if there was one, the event is our echo and is not
dispatched (`b24pipe_echo_suppressed_total{event}`). So N writes suppress at most N events,
in any order and however many workers race. Never suppressed: an event whose user is not
the user the app writes as (another key, never marked), an event without a user, and an
event without a recognisable entity. A write that Bitrix24 refused causes no echo: the
client `release`s its marks. An add's id is unknown before the answer, so its mark is for
the entity type (see `workers.guards.writemap`).

Loop breaker. Suppression fails when one write causes more than one event, or a robot or
business process answers our write with a write of its own (user 0), or another app
ping-pongs with us. The model: a *cycle* is a handler run on a non-human event (user is our
writer, a robot 0, or unknown) of an entity the pipeline wrote within the last
`B24PIPE_LOOP_WINDOW` seconds, i.e. an event that may be a consequence of our own write,
about to cause the next one. More than `B24PIPE_LOOP_BOUND` cycles on one entity within the
window: the run is cut, the event parked (`LoopCut` is a `Permanent`: the job lands in the
failed registry, from which `b24pipe failed requeue` replays it), with a log line and
`b24pipe_loop_cut_total{event}`. An event caused by a person resets the entity's chain: a
busy entity changed by people is not a loop however often we write it; nor is an entity we
have not written within the window. Loops through *other* entities (an add handler that
adds) are what echo suppression is for.

All decisions are Lua scripts (workers/lua), one round trip each, atomic across workers and
hosts, on Redis's clock.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from prometheus_client import Counter

from shared import lua
from shared.events import Event
from shared.keys import Keys
from shared.logs import log
from shared.settings import Settings
from workers.errors import Permanent
from workers.guards.coalesce import metric_label
from workers.guards.writemap import ANY_ID, DEFAULT, Echo, WriteMap

ECHO_SUPPRESSED = Counter(
    "b24pipe_echo_suppressed",
    "Events recognised as echoes of the pipeline's own writes, not dispatched",
    ["event"],
)
LOOP_CUT = Counter("b24pipe_loop_cut", "Handler runs cut by the loop breaker, events parked", ["event"])

MARK_CAP = 1000
"""Most live marks kept per (portal, entity, event, writer); older ones are dropped."""

_log = logging.getLogger("b24pipe.guards")


class LoopCut(Permanent):
    """The loop breaker cut this event: parked (failed registry), not retried."""


def _mark_call(
    keys: Keys, settings: Settings, member_id: str, writer: int | None, echoes: Sequence[Echo]
) -> tuple[list[str], list[int]] | None:
    """Keys and args of echo_mark.lua, or None when nothing can be marked (no echo, or the
    writer user is unknown: then nothing is ever suppressed, which is the safe side)."""
    if writer is None or writer <= 0 or not echoes:
        return None
    marks = [keys.echo_marks(member_id, echo.entity_key, echo.event, writer) for echo in echoes]
    chains = sorted({keys.chain(member_id, echo.entity_key) for echo in echoes if echo.entity_id != ANY_ID})
    args = [len(marks), settings.echo_ttl * 1000, writer, settings.loop_window * 1000, MARK_CAP]
    return [*marks, *chains], args


def _release_keys(keys: Keys, member_id: str, writer: int | None, echoes: Sequence[Echo]) -> list[str]:
    if writer is None or writer <= 0:
        return []
    return [keys.echo_marks(member_id, echo.entity_key, echo.event, writer) for echo in echoes]


class EchoGuard:
    """Dispatch side: `consume` an event's mark before dispatching it."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        writes: WriteMap = DEFAULT,
        known_events: Collection[str] = (),
    ) -> None:
        self._consume = lua.script(client, "workers/lua/echo_consume.lua")
        self._keys = Keys(settings.namespace)
        self._known = frozenset(known_events) | writes.events()

    def consume(self, event: Event) -> bool:
        """True: the event is the echo of our own write; one mark is used up, do not dispatch."""
        if (
            event.entity_key is None
            or event.entity_type is None
            or event.user_id is None
            or event.user_id <= 0
        ):
            return False
        keys = [self._keys.echo_marks(event.member_id, event.entity_key, event.name, event.user_id)]
        if event.name.upper().endswith("ADD"):
            keys.append(
                self._keys.echo_marks(
                    event.member_id, f"{event.entity_type}:{ANY_ID}", event.name, event.user_id
                )
            )
        if not self._consume(keys=keys):
            return False
        ECHO_SUPPRESSED.labels(metric_label(event.name, self._known)).inc()
        log(
            _log,
            logging.DEBUG,
            "echo suppressed",
            member_id=event.member_id,
            event_name=event.name,
            entity=event.entity_key,
        )
        return True


class EchoMarker:
    """REST-client side (asyncio): mark before each write, release after a refused write."""

    def __init__(self, client: aioredis.Redis, settings: Settings, writes: WriteMap = DEFAULT) -> None:
        self._client = client
        self._mark = lua.script(client, "workers/lua/echo_mark.lua")
        self._keys = Keys(settings.namespace)
        self._settings = settings
        self._writes = writes

    def is_write(self, method: str) -> bool:
        """Whether a method writes (the client passes `auth_connector` on those)."""
        return self._writes.is_write(method)

    async def mark(
        self, member_id: str, writer: int | None, method: str, params: Mapping[str, Any]
    ) -> list[Echo]:
        """Before sending `method(params)` as user `writer`: mark the echoes it will cause."""
        echoes = self._writes.echoes(method, params)
        call = _mark_call(self._keys, self._settings, member_id, writer, echoes)
        if call is None:
            return []
        await self._mark(keys=call[0], args=call[1])
        return echoes

    async def release_calls(
        self, member_id: str, writer: int | None, calls: Iterable[tuple[str, Mapping[str, Any]]]
    ) -> None:
        """Commands of a batch that Bitrix24 refused cause no echo: drop their marks."""
        echoes = [echo for method, params in calls for echo in self._writes.echoes(method, params)]
        if echoes:
            await self.release(member_id, writer, echoes)

    async def release(self, member_id: str, writer: int | None, echoes: Sequence[Echo]) -> None:
        """The write was refused (no echo will come): drop one mark per echo."""
        keys = _release_keys(self._keys, member_id, writer, echoes)
        if keys:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.rpop(key)
                await pipe.execute()


class LoopBreaker:
    """Dispatch side: `check(event)` right before a handler runs on it (after coalescing)."""

    def __init__(self, client: redis.Redis, settings: Settings, known_events: Collection[str] = ()) -> None:
        self._check = lua.script(client, "workers/lua/loop_check.lua")
        self._keys = Keys(settings.namespace)
        self._window_ms = settings.loop_window * 1000
        self._bound = settings.loop_bound
        self._known = frozenset(known_events) | DEFAULT.events()

    def check(self, event: Event) -> None:
        """Count this run as a cycle when it is one; raise `LoopCut` past the bound."""
        entity = event.entity_key
        if entity is None:
            return
        user = "" if event.user_id is None else str(event.user_id)
        verdict = self._check(
            keys=[
                self._keys.chain(event.member_id, entity),
                self._keys.chain_cycles(event.member_id, entity),
            ],
            args=[event.id, user, self._window_ms, self._bound],
        )
        if int(verdict) >= 0:
            return
        LOOP_CUT.labels(metric_label(event.name, self._known)).inc()
        log(
            _log,
            logging.WARNING,
            "loop cut",
            member_id=event.member_id,
            event_name=event.name,
            entity=entity,
            bound=self._bound,
            window=self._window_ms // 1000,
        )
        raise LoopCut(
            f"loop cut: more than {self._bound} write-echo-write cycles on {entity} "
            f"within {self._window_ms // 1000}s"
        )
