"""The aiohttp application: authorization server, portals' REST, control API, sinks."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from b24pipe.sim import authserver, changes, control, rest, sink
from b24pipe.sim.idempotency import IdempotencyStore
from b24pipe.sim.state import Simulator


def make_app(sim: Simulator) -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[rest.SIM] = sim
    app[rest.IDEMPOTENCY] = IdempotencyStore()
    app[sink.SINKS] = {}
    for verb in ("GET", "POST"):
        app.router.add_route(verb, "/oauth/token/", authserver.token)
        app.router.add_route(verb, "/oauth/token", authserver.token)
        app.router.add_route(verb, "/rest/app.info", authserver.app_info)
        app.router.add_route(verb, "/rest/app.info.json", authserver.app_info)
        app.router.add_route(verb, "/rest/{method}", authserver.other_method)
        app.router.add_route(verb, "/p/{domain}/rest/api/{method}", rest.handle_v3)
        app.router.add_route(verb, "/p/{domain}/rest/api/{user}/{secret}/{method}", rest.handle_v3)
        app.router.add_route(verb, "/p/{domain}/rest/{method}", rest.handle)
        app.router.add_route(verb, "/p/{domain}/rest/{user}/{secret}/{method}", rest.handle)
    app.router.add_routes(control.routes)
    app.router.add_routes(changes.routes)
    app.router.add_routes(sink.routes)

    async def sender(_: web.Application) -> AsyncIterator[None]:
        yield
        await sim.sender.close()

    app.cleanup_ctx.append(sender)
    return app
