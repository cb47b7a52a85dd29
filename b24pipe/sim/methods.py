"""The REST methods a simulated portal knows, by name, with the scope each needs.

A method is a plain function of the `Call` (portal, calling user, parameters) that returns
an `Answer` or raises `RestError`; writes append a `Change`, which the HTTP layer turns into
events after the state has changed. `batch` lives in batch.py, event.* in eventapi.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from b24pipe.sim import errors
from b24pipe.sim.crm import item_key
from b24pipe.sim.portal import Change, Portal


@dataclass
class Answer:
    result: Any
    total: int | None = None
    next: int | None = None


@dataclass
class Call:
    portal: Portal
    user_id: int
    params: dict[str, Any]
    changes: list[Change] = field(default_factory=list)
    tests: list[dict[str, Any]] = field(default_factory=list)  # event.test calls: ONAPPTEST to send

    @property
    def admin(self) -> bool:
        user = self.portal.users.get(self.user_id)
        return bool(user and user.admin)

    @property
    def auth_connector(self) -> str | None:
        value = self.params.get("auth_connector")
        return str(value) if value else None


Method = Callable[[Call], Answer]
REGISTRY: dict[str, tuple[str | None, Method]] = {}


def method(name: str, scope: str | None = None) -> Callable[[Method], Method]:
    def register(fn: Method) -> Method:
        REGISTRY[name] = (scope, fn)
        return fn

    return register


def lookup(name: str) -> tuple[str | None, Method]:
    found = REGISTRY.get(name.lower())
    if found is None:
        raise errors.method_not_found()
    return found


@method("app.info")
def app_info(call: Call) -> Answer:
    app = call.portal.app
    assert app is not None  # the token check has already required an installed app
    return Answer(
        {
            "ID": 1,
            "CODE": "b24pipe.simulated",
            "VERSION": app.version,
            "STATUS": call.portal.status,
            "INSTALLED": app.installed and app.finished,
            "PAYMENT_EXPIRED": "Y" if call.portal.payment_expired else "N",
            "DAYS": None,
            "LANGUAGE_ID": app.language,
            "LICENSE": "en_project",
            "LICENSE_TYPE": "project",
            "LICENSE_FAMILY": "project",
        }
    )


@method("user.admin")
def user_admin(call: Call) -> Answer:
    return Answer(call.admin)


@method("profile")
def profile(call: Call) -> Answer:
    user = call.portal.users.get(call.user_id)
    if user is None:
        raise errors.access_denied("User not found")
    return Answer(
        {
            "ID": str(user.id),
            "ADMIN": user.admin,
            "NAME": user.name,
            "LAST_NAME": user.last_name,
            "PERSONAL_GENDER": "",
            "TIME_ZONE": "",
            "TIME_ZONE_OFFSET": 0,
        }
    )


def _fields(call: Call) -> dict[str, Any]:
    value = call.params.get("fields") or {}
    if not isinstance(value, dict):
        raise errors.argument("fields must be an object")
    return value


def _register_crm(entity: str) -> None:
    """crm.<entity>.add/get/update/list/delete and the ONCRM<ENTITY>* events they cause."""
    prefix, event = f"crm.{entity}", f"ONCRM{entity.upper()}"

    def add(call: Call) -> Answer:
        portal = call.portal
        new_id = portal.crm.add(entity, _fields(call), call.user_id, portal.clock.time())
        call.changes.append(Change(f"{event}ADD", str(new_id), call.user_id, call.auth_connector))
        return Answer(new_id)

    def get(call: Call) -> Answer:
        return Answer(call.portal.crm.get(entity, call.params.get("id", call.params.get("ID"))))

    def update(call: Call) -> Answer:
        portal, item_id = call.portal, call.params.get("id", call.params.get("ID"))
        portal.crm.update(entity, item_id, _fields(call), call.user_id, portal.clock.time())
        call.changes.append(
            Change(f"{event}UPDATE", str(item_key(item_id)), call.user_id, call.auth_connector)
        )
        return Answer(True)

    def delete(call: Call) -> Answer:
        item_id = call.params.get("id", call.params.get("ID"))
        call.portal.crm.delete(entity, item_id)
        call.changes.append(
            Change(f"{event}DELETE", str(item_key(item_id)), call.user_id, call.auth_connector)
        )
        return Answer(True)

    def listing(call: Call) -> Answer:
        page = call.portal.crm.list(entity, call.params)
        return Answer(page.items, page.total, page.next)

    for suffix, fn in (("add", add), ("get", get), ("update", update), ("delete", delete), ("list", listing)):
        method(f"{prefix}.{suffix}", "crm")(fn)


for _entity in ("deal", "lead"):
    _register_crm(_entity)
