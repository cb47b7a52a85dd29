"""A recording event handler inside the simulator, for tests that need somewhere to deliver.

`POST /_sim/sink/<name>` stores the raw body, content type and query and answers with the
sink's configured status (200 by default; set 500 to play a failing handler, or a delay to
play a slow one); `GET /_sim/sink/<name>` returns what arrived, each body also decoded with
PHP's rules for convenience.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from b24pipe.sim.phpform import parse_str
from b24pipe.sim.rest import json_response

routes = web.RouteTableDef()


@dataclass
class Sink:
    status: int = 200
    delay: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)


SINKS: web.AppKey[dict[str, Sink]] = web.AppKey("sinks", dict)


@routes.post("/_sim/sink/{name}")
async def receive(request: web.Request) -> web.Response:
    sink = request.app[SINKS].setdefault(request.match_info["name"], Sink())
    raw = (await request.read()).decode("utf-8", "replace")
    sink.received.append(
        {
            "body": raw,
            "content_type": request.headers.get("Content-Type", ""),
            "query": request.query_string,
            "form": parse_str(raw),
            "user_agent": request.headers.get("User-Agent", ""),
        }
    )
    if sink.delay:
        await asyncio.sleep(sink.delay)
    return json_response({"status": "ok"} if sink.status < 400 else {"status": "error"}, sink.status)


@routes.get("/_sim/sink/{name}")
async def read(request: web.Request) -> web.Response:
    sink = request.app[SINKS].get(request.match_info["name"], Sink())
    return json_response(sink.received)


@routes.post("/_sim/sink/{name}/config")
async def configure(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read() or b"{}")
        status, delay = int(body.get("status", 200)), float(body.get("delay", 0.0))
    except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
        return json_response({"error": "expects {status, delay}"}, 400)
    sink = request.app[SINKS].setdefault(request.match_info["name"], Sink())
    sink.status, sink.delay = status, delay
    return json_response({"status": status, "delay": delay})
