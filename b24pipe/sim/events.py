"""Event delivery: POSTs exactly as Bitrix24 sends them, and never a retry.

Each portal has one sender queue, so events arrive in the order they happened unless the
portal's faults ask otherwise (reordering within a window, duplicates, echoes that arrive
before the REST answer that caused them, delays). A handler that is down, slow (past
`event_timeout`) or answers non-2xx has lost that event: it is counted and forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import aiohttp

from b24pipe.sim.oauth import TokenBook
from b24pipe.sim.phpform import http_build_query
from b24pipe.sim.portal import DOORBELL, Change, Portal

FORM = "application/x-www-form-urlencoded"
USER_AGENT = "Bitrix24 Webhook Engine"


@dataclass(frozen=True)
class Outgoing:
    url: str
    event: str
    handler_id: int
    form: dict[str, Any]
    kind: str = "event"  # "event" or "install_page"
    query: str = ""


def auth_block(
    portal: Portal, *, access: str | None, refresh: str | None, user_id: int | None
) -> dict[str, str]:
    """The `auth` block in Bitrix24's key order; tokens only when a user acted."""
    now = portal.clock.time()
    auth: dict[str, str] = {}
    if access:
        auth |= {
            "access_token": access,
            "expires": str(int(now + portal.token_ttl)),
            "expires_in": str(portal.token_ttl),
            "scope": ",".join(portal.scope),
        }
    auth |= {"domain": portal.domain, "server_endpoint": portal.server_endpoint}
    if access:
        auth["status"] = portal.status
    auth |= {"client_endpoint": portal.client_endpoint, "member_id": portal.member_id}
    if user_id is not None:
        auth["user_id"] = str(user_id)
    if refresh:
        auth["refresh_token"] = refresh
    auth["application_token"] = portal.app.application_token if portal.app else ""
    return auth


def event_form(
    portal: Portal, event: str, handler_id: int, data: dict[str, Any], auth: dict[str, str]
) -> dict[str, Any]:
    return {
        "event": event,
        "event_handler_id": str(handler_id),
        "data": data,
        "ts": str(int(portal.clock.time())),
        "auth": auth,
    }


def change_deliveries(portal: Portal, tokens: TokenBook, change: Change) -> list[Outgoing]:
    """What one entity change sends to the online handlers bound to its event."""
    data = {"FIELDS": {"ID": change.entity_id}}
    queued = portal.queue_offline(change, data)
    if not portal.delivering:
        return []
    out = doorbell_deliveries(portal, tokens) if queued else []
    for binding in portal.online_targets(change.event):
        if change.user_id is None:  # a robot, workflow or agent: no tokens at all
            auth = auth_block(portal, access=None, refresh=None, user_id=None)
        else:
            user_id = binding.auth_type or change.user_id
            access = tokens.issue_access_only(
                portal.member_id, user_id, portal.clock.time(), portal.token_ttl
            )
            auth = auth_block(portal, access=access, refresh=None, user_id=user_id)
        out.append(
            Outgoing(
                binding.handler,
                change.event,
                binding.id,
                event_form(portal, change.event, binding.id, data, auth),
            )
        )
    return out


def doorbell_deliveries(portal: Portal, tokens: TokenBook) -> list[Outgoing]:
    """ONOFFLINEEVENT to its online bindings (throttled); its auth carries a refresh token."""
    out = []
    for binding in portal.doorbells():
        installer = portal.app.installer_id if portal.app else 1
        pair = tokens.issue(portal.member_id, installer, portal.clock.time(), portal.token_ttl)
        auth = auth_block(portal, access=pair.access_token, refresh=pair.refresh_token, user_id=installer)
        data = {"TIMESTAMP": str(int(portal.clock.time()))}
        form = event_form(portal, DOORBELL, binding.id, data, auth)
        out.append(Outgoing(binding.handler, DOORBELL, binding.id, form))
    return out


def test_deliveries(portal: Portal, query: dict[str, Any]) -> list[Outgoing]:
    """The ONAPPTEST an `event.test` call sends to the handlers bound to it."""
    if not portal.delivering:
        return []
    auth = auth_block(portal, access=None, refresh=None, user_id=None)
    data = {"QUERY": query}
    return [
        Outgoing(b.handler, "ONAPPTEST", b.id, event_form(portal, "ONAPPTEST", b.id, data, auth))
        for b in portal.online_targets("ONAPPTEST")
    ]


class EventSender:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._queues: dict[str, asyncio.Queue[Outgoing]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    async def close(self) -> None:
        for task in self._workers.values():
            task.cancel()
        for task in self._workers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self._session

    async def send_now(self, portal: Portal, items: list[Outgoing]) -> list[dict[str, Any]]:
        """Deliver at once, in order, and report what each handler answered."""
        return [await self._send(portal, item) for item in items]

    async def send_concurrently(
        self, portal: Portal, items: list[Outgoing], concurrency: int
    ) -> list[dict[str, Any]]:
        """Deliver with up to `concurrency` POSTs in flight, started in order; what each answered."""
        gate = asyncio.Semaphore(concurrency)

        async def one(item: Outgoing) -> dict[str, Any]:
            async with gate:
                return await self._send(portal, item)

        return list(await asyncio.gather(*(one(item) for item in items)))

    def enqueue(self, portal: Portal, items: list[Outgoing]) -> None:
        queue = self._queues.get(portal.member_id)
        if queue is None:
            queue = self._queues[portal.member_id] = asyncio.Queue()
            self._workers[portal.member_id] = asyncio.create_task(self._worker(portal, queue))
        for item in items:
            queue.put_nowait(item)

    async def drain(self, portal: Portal) -> None:
        queue = self._queues.get(portal.member_id)
        if queue is not None:
            await queue.join()

    async def _worker(self, portal: Portal, queue: asyncio.Queue[Outgoing]) -> None:
        while True:
            batch = [await queue.get()]
            if portal.faults.event_reorder:
                await asyncio.sleep(portal.faults.reorder_window)
                while not queue.empty():
                    batch.append(queue.get_nowait())
                batch.reverse()
            for item in batch:
                try:
                    await self._send(portal, item)
                finally:
                    queue.task_done()

    async def _send(self, portal: Portal, item: Outgoing) -> dict[str, Any]:
        faults = portal.faults
        if faults.event_delay:
            await asyncio.sleep(faults.event_delay)
        copies = 2 if faults.event_duplicate and item.kind == "event" else 1
        record: dict[str, Any] = {}
        for copy in range(copies):
            record = await self._post(portal, item, duplicate=copy > 0)
        return record

    async def _post(self, portal: Portal, item: Outgoing, duplicate: bool) -> dict[str, Any]:
        url = f"{item.url}{'&' if '?' in item.url else '?'}{item.query}" if item.query else item.url
        record: dict[str, Any] = {
            "event": item.event,
            "url": item.url,
            "kind": item.kind,
            "handler_id": item.handler_id,
            "duplicate": duplicate,
            "status": None,
        }
        try:
            timeout = aiohttp.ClientTimeout(total=portal.faults.event_timeout)
            async with self._client().post(
                url, data=http_build_query(item.form), headers={"Content-Type": FORM}, timeout=timeout
            ) as response:
                await response.read()
                record["status"] = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            record["error"] = type(exc).__name__
        record["ok"] = record["status"] is not None and 200 <= record["status"] < 300
        if record["ok"]:
            portal.stats.events_sent += 1
        else:
            portal.stats.events_failed += 1
        portal.stats.deliveries.append(record)
        return record
