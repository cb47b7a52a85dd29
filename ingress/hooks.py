"""Where install/update verification plugs into the event path (`ingress.lifecycle`).

The event path never trusts an ONAPPINSTALL or ONAPPUPDATE by itself: they bring the
token the check would use, so only the lifecycle handler (which asks the authorization
server) may accept them. Until a real handler is wired in, `Refuse` answers 401 to all of
them and 503 to events waiting for a pending install, so nothing unverified is accepted
and nothing held is acknowledged.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from ingress.delivery import Delivery

INVALID_TOKEN = b'{"status":"error","error":"invalid_application_token"}'
UNAVAILABLE = b'{"status":"error","error":"unavailable"}'


def answer(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json")


class LifecycleHandler(Protocol):
    async def on_install(self, delivery: Delivery, remote: str) -> web.Response:
        """ONAPPINSTALL, before any token check: it brings the portal's first token."""
        ...

    async def on_update(self, delivery: Delivery, remote: str) -> web.Response:
        """ONAPPUPDATE: may bring a new token."""
        ...

    async def on_install_page(self, form: dict[str, str], query: dict[str, str], remote: str) -> web.Response:
        """POST /b24/install: its form fields and query, read and bounded by the event path."""
        ...

    async def quarantine(self, delivery: Delivery, remote: str) -> web.Response:
        """An event whose token matched a pending (not yet verified) install. Redis errors
        propagate: the event path answers them 503 within the request's deadline."""
        ...


class Refuse:
    """The default: accept nothing that needs verification."""

    async def on_install(self, delivery: Delivery, remote: str) -> web.Response:
        return answer(401, INVALID_TOKEN)

    async def on_update(self, delivery: Delivery, remote: str) -> web.Response:
        return answer(401, INVALID_TOKEN)

    async def on_install_page(self, form: dict[str, str], query: dict[str, str], remote: str) -> web.Response:
        return answer(401, INVALID_TOKEN)

    async def quarantine(self, delivery: Delivery, remote: str) -> web.Response:
        return answer(503, UNAVAILABLE)
