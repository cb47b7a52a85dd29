"""Which event each REST write causes: the map echo suppression marks writes with.

Bitrix24 sends an app the events caused by the app's own writes (`crm.deal.update` ->
`ONCRMDEALUPDATE`). To recognise those echoes the REST client marks every write *before*
sending it, naming the event it will cause and the entity it touches, in the same terms
`shared.events.entity_of` uses for incoming events: `deal`, `lead`, `contact`, `company`,
`quote`, `activity`, `product`, `timeline_comment`, `task`, and `dynamic_<ENTITY_TYPE_ID>`
for smart-process items. A write whose entity cannot be read from its parameters (a missing
or non-numeric id, a `$result[...]` reference inside a batch) maps to nothing: it is simply
not marked, so nothing can be suppressed by mistake.

An add's entity id is only known from the answer, and its echo can come first; so adds are
marked for the entity *type* (`deal:*`), which the add echo of any deal by the same writer
consumes.

Applications extend the map with `register_write` for methods b24pipe does not know.
Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from workers.rest.query import QueryError, parse_command

ANY_ID = "*"
"""Entity id of an add's mark: the new id is unknown until the answer."""

# crm.item's entityTypeId of the classic CRM objects, whose items fire the classic events.
_CRM_TYPE_IDS = {
    "1": ("lead", "LEAD"),
    "2": ("deal", "DEAL"),
    "3": ("contact", "CONTACT"),
    "4": ("company", "COMPANY"),
    "7": ("quote", "QUOTE"),
}
_ACTIONS = {"add": "ADD", "update": "UPDATE", "delete": "DELETE"}
_TASK_UPDATES = (
    "update",
    "complete",
    "renew",
    "start",
    "pause",
    "defer",
    "delegate",
    "approve",
    "disapprove",
    "startwatch",
    "stopwatch",
)


@dataclass(frozen=True, slots=True)
class Echo:
    """The event one write will cause: its name and the entity it names."""

    event: str
    entity_type: str
    entity_id: str

    @property
    def entity_key(self) -> str:
        """Same shape as `Event.entity_key`; `<type>:*` for adds."""
        return f"{self.entity_type}:{self.entity_id}"


@dataclass(frozen=True, slots=True)
class WriteRule:
    """A write method: the event it causes, the entity type, and where its id is.

    `id_param` None: the method creates the entity (its mark is for the type). `type_param`
    names a parameter holding an ENTITY_TYPE_ID (crm.item.*), which decides the type."""

    event: str
    entity_type: str
    id_param: str | None
    type_param: str | None = None


def _numeric(value: object) -> str | None:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        text = str(value).strip()
        if text.isdigit() and len(text) <= 20:
            return str(int(text))
    return None


def _param(params: Mapping[str, Any], name: str) -> object:
    """Bitrix24 reads top-level parameter names case-insensitively (`id`, `ID`)."""
    if name in params:
        return params[name]
    lowered = name.lower()
    return next((value for key, value in params.items() if str(key).lower() == lowered), None)


def _default_rules() -> dict[str, WriteRule]:
    rules: dict[str, WriteRule] = {}
    objects = {
        "deal": "DEAL",
        "lead": "LEAD",
        "contact": "CONTACT",
        "company": "COMPANY",
        "quote": "QUOTE",
        "activity": "ACTIVITY",
        "product": "PRODUCT",
    }
    for obj, code in objects.items():
        for action, suffix in _ACTIONS.items():
            rules[f"crm.{obj}.{action}"] = WriteRule(
                f"ONCRM{code}{suffix}", obj, None if action == "add" else "id"
            )
    for action, suffix in _ACTIONS.items():
        rules[f"crm.timeline.comment.{action}"] = WriteRule(
            f"ONCRMTIMELINECOMMENT{suffix}", "timeline_comment", None if action == "add" else "id"
        )
        rules[f"crm.item.{action}"] = WriteRule(
            f"ONCRMDYNAMICITEM{suffix}",
            "dynamic",
            None if action == "add" else "id",
            type_param="entityTypeId",
        )
    rules["tasks.task.add"] = WriteRule("ONTASKADD", "task", None)
    rules["tasks.task.delete"] = WriteRule("ONTASKDELETE", "task", "taskId")
    for action in _TASK_UPDATES:
        rules[f"tasks.task.{action}"] = WriteRule("ONTASKUPDATE", "task", "taskId")
    return rules


class WriteMap:
    """Write method -> rule. `DEFAULT` is the process-wide map the REST client uses."""

    def __init__(self, rules: Mapping[str, WriteRule] | None = None) -> None:
        self._rules: dict[str, WriteRule] = dict(_default_rules() if rules is None else rules)

    def register(
        self, method: str, event: str, entity_type: str, id_param: str | None, type_param: str | None = None
    ) -> None:
        """Teach the map a write method (replacing what it knew of that method)."""
        if not method.strip() or not event.strip() or not entity_type.strip():
            raise ValueError("method, event and entity_type must be non-empty")
        self._rules[method.strip().lower()] = WriteRule(
            event.strip().upper(), entity_type.strip(), id_param, type_param
        )

    def is_write(self, method: str) -> bool:
        """True for a known write method, and for `batch` (which may carry writes)."""
        name = method.strip().lower()
        return name == "batch" or name in self._rules

    def methods(self) -> frozenset[str]:
        """Every write method the map knows (lower case)."""
        return frozenset(self._rules)

    def events(self) -> frozenset[str]:
        """Every event name a known write can cause (the bounded set of metric labels)."""
        names = {rule.event for rule in self._rules.values()}
        names |= {
            f"ONCRM{code}{suffix}" for _, code in _CRM_TYPE_IDS.values() for suffix in _ACTIONS.values()
        }
        return frozenset(names)

    def echoes(self, method: str, params: Mapping[str, Any]) -> list[Echo]:
        """The echo events a call will cause: none for reads and unreadable writes, one per
        readable command for `batch`."""
        name = method.strip().lower()
        if name == "batch":
            return list(self._batch_echoes(_param(params, "cmd")))
        rule = self._rules.get(name)
        if rule is None:
            return []
        echo = self._echo(rule, params)
        return [] if echo is None else [echo]

    def _batch_echoes(self, commands: object) -> Iterable[Echo]:
        if isinstance(commands, Mapping):
            texts: Iterable[object] = commands.values()
        elif isinstance(commands, (list, tuple)):
            texts = commands
        else:
            return
        for text in texts:
            if not isinstance(text, str):
                continue
            try:
                method, params = parse_command(text)
            except QueryError:
                continue
            if method.strip().lower() != "batch":  # Bitrix24 refuses nested batches anyway
                yield from self.echoes(method, params)

    @staticmethod
    def _echo(rule: WriteRule, params: Mapping[str, Any]) -> Echo | None:
        event, entity_type = rule.event, rule.entity_type
        if rule.type_param is not None:
            type_id = _numeric(_param(params, rule.type_param))
            if type_id is None:
                return None
            classic = _CRM_TYPE_IDS.get(type_id)
            if classic is not None:
                entity_type = classic[0]
                event = event.replace("DYNAMICITEM", classic[1])
            else:
                entity_type = f"dynamic_{type_id}"
        if rule.id_param is None:
            return Echo(event, entity_type, ANY_ID)
        entity_id = _numeric(_param(params, rule.id_param))
        return None if entity_id is None else Echo(event, entity_type, entity_id)


DEFAULT = WriteMap()


def register_write(
    method: str, event: str, entity_type: str, id_param: str | None, type_param: str | None = None
) -> None:
    """Application hook: `register_write("crm.requisite.update", "ONCRMREQUISITEUPDATE",
    "requisite", "id")` makes the REST client mark that write's echo."""
    DEFAULT.register(method, event, entity_type, id_param, type_param)
