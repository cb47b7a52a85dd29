"""People (or robots) changing CRM entities in the portal's UI: one change, or a storm of them.

`POST /_sim/portals/{m}/changes` applies N changes as one person, in order, then delivers every
event they cause to the bound handlers as fast as the handlers accept them (`concurrency`
POSTs in flight, in the order the changes happened), and answers once all are delivered with
what the handlers answered. This is how a burst of 1,000 updates reaches an app: not one at a
time through the portal's sender queue (which still carries the echoes of the app's own
writes), but as quickly as Bitrix24's event engine gets rid of it.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from aiohttp import web

from b24pipe.sim.crm import ENTITIES, item_key
from b24pipe.sim.errors import RestError
from b24pipe.sim.events import change_deliveries
from b24pipe.sim.portal import Change, Portal
from b24pipe.sim.rest import SIM, json_response

ACTIONS = ("add", "update", "delete")
MAX_CHANGES = 20000
routes = web.RouteTableDef()


class BadChange(Exception):
    """A change that cannot be applied: answered 400, nothing changed."""


def apply_change(
    portal: Portal, entity: str, action: str, item_id: Any, fields: dict[str, Any], user_id: int | None
) -> Change:
    """Apply one change to the portal's store; the `Change` says which event it causes."""
    if entity not in ENTITIES or action not in ACTIONS:
        raise BadChange("entity must be deal|lead and action add|update|delete")
    now, actor = portal.clock.time(), user_id or 0
    try:
        if action == "add":
            item_id = portal.crm.add(entity, fields, actor, now)
        elif action == "update":
            portal.crm.update(entity, item_id, fields, actor, now)
        else:
            portal.crm.delete(entity, item_id)
    except RestError as exc:  # the store's own answer, e.g. an unknown id
        raise BadChange(f"cannot {action} {entity} {item_id}: {exc.description}") from None
    return Change(f"ONCRM{entity.upper()}{action.upper()}", str(item_key(item_id)), user_id)


def _validated(
    portal: Portal, body: Any
) -> tuple[str, int | None, list[tuple[str, Any, dict[str, Any]]], int]:
    """Everything checked before anything changes (a bad entry refuses the whole call)."""
    if not isinstance(body, dict):
        raise BadChange("body must be a JSON object")
    entity = body.get("entity", "deal")
    robot = body.get("robot", False) is True
    user_id = None if robot else body.get("user_id", next(iter(portal.users)))
    if entity not in ENTITIES:
        raise BadChange("entity must be deal|lead")
    if user_id is not None and (isinstance(user_id, bool) or user_id not in portal.users):
        raise BadChange("user_id must name a user of the portal")
    concurrency = body.get("concurrency", 16)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 256:
        raise BadChange("concurrency must be 1..256")
    raw = body.get("changes")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CHANGES:
        raise BadChange(f"changes must be a list of 1..{MAX_CHANGES} entries")
    existing = set(portal.crm.items[entity])
    changes = []
    for entry in raw:
        if not isinstance(entry, dict) or entry.get("action", "update") not in ACTIONS:
            raise BadChange("each change is {action: add|update|delete, id, fields}")
        action, fields = entry.get("action", "update"), entry.get("fields") or {}
        if not isinstance(fields, dict):
            raise BadChange("fields must be an object")
        item_id = entry.get("id")
        if action != "add":
            try:
                known = item_key(item_id) in existing
            except RestError:
                known = False
            if not known:
                raise BadChange(f"cannot {action} {entity} {item_id}: not found")
            if action == "delete":
                existing.discard(item_key(item_id))
        changes.append((action, item_id, fields))
    return entity, user_id, changes, concurrency


@routes.post("/_sim/portals/{member_id}/changes")
async def changes(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    portal = sim.portals.get(request.match_info["member_id"])
    if portal is None:
        return json_response({"error": "unknown portal"}, 404)
    try:
        entity, user_id, planned, concurrency = _validated(portal, await request.json())
    except (BadChange, ValueError) as exc:
        return json_response({"error": str(exc) or "body is not JSON"}, 400)
    ids: list[int] = []
    outgoing = []
    for action, item_id, fields in planned:
        change = apply_change(portal, entity, action, item_id, fields, user_id)
        ids.append(int(change.entity_id))
        outgoing += change_deliveries(portal, sim.tokens, change)
    started = time.monotonic()
    records = await sim.sender.send_concurrently(portal, outgoing, concurrency)
    statuses = Counter(str(record["status"]) for record in records)
    return json_response(
        {
            "applied": len(planned),
            "ids": ids,
            "deliveries": len(outgoing),
            "statuses": dict(statuses),
            "seconds": round(time.monotonic() - started, 3),
        }
    )
