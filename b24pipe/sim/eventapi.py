"""event.bind/unbind/get and the event.offline.* family.

Binding needs an admin and OAuth app auth; an offline binding has no handler URL. The
offline queue itself is in offline.py; what gets queued is decided in Portal.queue_offline.
"""

from __future__ import annotations

from typing import Any

from b24pipe.sim import errors
from b24pipe.sim.methods import Answer, Call, method

LIST_PAGE = 50  # event.offline.list rows per page


def _require_admin(call: Call) -> None:
    if not call.admin:
        raise errors.access_denied("Access denied! Admin permissions required")


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        raise errors.argument(f"not an integer: {value!r}") from None


@method("event.bind")
def bind(call: Call) -> Answer:
    _require_admin(call)
    params = call.params
    event = str(params.get("event") or params.get("EVENT") or "").upper()
    handler = str(params.get("handler") or params.get("HANDLER") or "")
    offline = str(params.get("event_type") or "online").lower() == "offline"
    if not event:
        raise errors.argument("Event name not specified")
    if offline:
        handler = ""
    elif not handler.startswith(("http://", "https://")):
        raise errors.argument("Handler URL is required and must be http(s)")
    auth_type = _int(params.get("auth_type"))
    connector = str(params["auth_connector"]) if params.get("auth_connector") else None
    portal = call.portal
    if any(b.event == event and b.handler == handler and b.offline == offline for b in portal.bindings):
        raise errors.RestError(400, "ERROR_CORE", "Handler already binded")
    raw_options = params.get("options")
    options: dict[str, Any] = raw_options if isinstance(raw_options, dict) else {}
    binding = portal.bind(event, handler, auth_type, offline, connector)
    binding.min_timeout = float(_int(options.get("minTimeout"), 0))
    return Answer(True)


@method("event.unbind")
def unbind(call: Call) -> Answer:
    _require_admin(call)
    params = call.params
    event = str(params.get("event") or "").upper()
    handler = str(params.get("handler") or "")
    offline = str(params.get("event_type") or "online").lower() == "offline"
    portal = call.portal
    before = len(portal.bindings)
    portal.bindings = [
        b
        for b in portal.bindings
        if not (
            b.event == event and b.offline == offline and (offline or not handler or b.handler == handler)
        )
    ]
    return Answer({"count": before - len(portal.bindings)})


@method("event.test")
def test(call: Call) -> Answer:
    """Bitrix24's delivery probe: an ONAPPTEST through the queue, `data[QUERY]` echoing the call."""
    call.tests.append({k: v for k, v in call.params.items() if k != "auth"})
    return Answer("Successfully processed")


@method("event.get")
def get(call: Call) -> Answer:
    return Answer([b.as_api() for b in call.portal.bindings])


def _ids(value: Any) -> set[str] | None:
    if value in (None, "", []):
        return None
    if isinstance(value, dict):
        value = list(value.values())
    return {str(v) for v in (value if isinstance(value, list) else [value])}


@method("event.offline.get")
def offline_get(call: Call) -> Answer:
    _require_admin(call)
    params = call.params
    clear = _int(params.get("clear"), 1) == 1
    if not clear and not call.portal.offline_extended:
        raise errors.RestError(403, "WRONG_LICENSE", "The feature is not available on this plan")
    limit = max(1, _int(params.get("limit"), 50))  # no maximum: the request's time is the bound
    portal = call.portal
    process_id, batch = portal.offline.get(
        limit, clear, params.get("process_id") or None, _int(params.get("error")) == 1, portal.clock.time()
    )
    return Answer({"process_id": process_id, "events": [record.as_api() for record in batch]})


@method("event.offline.clear")
def offline_clear(call: Call) -> Answer:
    _require_admin(call)
    process_id = str(call.params.get("process_id") or "")
    if not process_id:
        raise errors.argument("process_id is required")
    call.portal.offline.clear(process_id, _ids(call.params.get("id")), _ids(call.params.get("message_id")))
    return Answer(True)


@method("event.offline.error")
def offline_error(call: Call) -> Answer:
    _require_admin(call)
    process_id = str(call.params.get("process_id") or "")
    message_ids = _ids(call.params.get("message_id"))
    if not process_id or not message_ids:
        raise errors.argument("process_id and message_id are required")
    call.portal.offline.mark_error(process_id, message_ids)
    return Answer(True)


@method("event.offline.list")
def offline_list(call: Call) -> Answer:
    _require_admin(call)
    records = call.portal.offline.listing(call.portal.clock.time())
    start = max(0, _int(call.params.get("start")))
    page = [record.as_api() for record in records[start : start + LIST_PAGE]]
    following = start + LIST_PAGE if start + LIST_PAGE < len(records) else None
    return Answer(page, len(records), following)


@method("feature.get")
def feature_get(call: Call) -> Answer:
    """Whether a plan feature is available: `rest_offline_extended` follows the portal's switch."""
    code = str(call.params.get("CODE") or call.params.get("code") or "")
    if code != "rest_offline_extended":
        return Answer({"value": "N"})
    return Answer({"value": "Y" if call.portal.offline_extended else "N"})
