"""What a REST method does, and so whether a call whose answer was lost may be sent again.

A request that failed after it may have reached Bitrix24 (a timeout after sending, a dropped
connection, a 5xx, a proxy's HTML error page) may or may not have run. Sending it again is
safe when running it twice leaves the portal as running it once:

- `READ`: gets, lists, fields, searches. Retried freely.
- `IDEMPOTENT`: writes that set given values or remove something (`*.update`, `*.set`,
  `*.delete`, `*.remove`, `*.unbind`). A second run writes the same values, or answers "not
  found"; it never makes a second object.
- `WRITE`: everything else (`*.add`, `*.send`, `*.start`, unknown methods). A second run may
  make a second deal, message or task. Retried only with an `Idempotency-Key` (REST 3.0);
  otherwise the caller gets `WriteUncertain`.

The decision uses the method's last name part only: Bitrix24's methods follow the
`<module>.<entity>.<action>` convention, and a name we cannot place counts as `WRITE`, the
kind that is never retried blindly.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

_READ_ACTIONS = frozenset(
    {
        "get",
        "list",
        "fields",
        "info",
        "search",
        "count",
        "current",
        "admin",
        "access",
        "time",
        "scope",
        "methods",
        "profile",
        "tail",
        "children",
        "documentation",
    }
)
_READ_PREFIXES = ("get", "list", "field")
_IDEMPOTENT_ACTIONS = frozenset({"update", "set", "delete", "remove", "unbind", "edit"})


class Kind(IntEnum):
    """Ordered by risk: a batch is as risky as its riskiest command."""

    READ = 0
    IDEMPOTENT = 1
    WRITE = 2


def method_kind(method: str) -> Kind:
    """The kind of one method (v2 or v3 name), from its last name part."""
    action = method.strip().lower().rsplit(".", 1)[-1]
    if action in _READ_ACTIONS or action.startswith(_READ_PREFIXES):
        return Kind.READ
    if action in _IDEMPOTENT_ACTIONS:
        return Kind.IDEMPOTENT
    return Kind.WRITE


def calls_kind(methods: Iterable[str]) -> Kind:
    """The kind of a request carrying these methods (a batch: its riskiest command)."""
    return max((method_kind(m) for m in methods), default=Kind.READ)


def resend_safe(kind: Kind, keyed: bool) -> bool:
    """May a request whose answer was lost be sent again? Reads and idempotent writes may;
    other writes only under an idempotency key (the server answers a repeat from its store)."""
    return kind is not Kind.WRITE or keyed
