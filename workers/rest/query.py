"""Pure helpers for `batch` and `call_many`: PHP-style queries and batch command strings.

Bitrix24's `batch` method takes up to 50 commands, each a string `method?query` where the
query is what PHP's `http_build_query` makes of the parameters (`fields[TITLE]=x`,
`fields[PHONE][0][VALUE]=...`) and what PHP's `parse_str` reads back on the server. A
`batch` call counts as one request against the portal's rate limit, so packing the calls of
a storm into batches is what keeps it under 2 requests per second.

`call_many` names its commands `c<index>` rather than bare numbers: PHP's json_encode turns
an array keyed exactly 0..n-1 into a JSON list, keyed otherwise into an object, so bare
numbers come back in either shape (`workers.rest.transport.php_keyed` reads both).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from shared.errors import B24PipeError

BATCH_LIMIT = 50
"""Commands Bitrix24 accepts in one `batch` call (more fail with ERROR_BATCH_LENGTH_EXCEEDED)."""

MAX_QUERY_DEPTH = 16
"""Deepest bracket nesting `parse_query` accepts (PHP's default max_input_nesting_level is 64)."""


class QueryError(B24PipeError, ValueError):
    """A batch command or query that cannot be read (too deep, not `method?query`)."""


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _pairs(prefix: str, value: object) -> Iterator[tuple[str, str]]:
    if value is None:
        return  # PHP's http_build_query drops nulls
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _pairs(f"{prefix}[{key}]", item)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _pairs(f"{prefix}[{index}]", item)
    else:
        yield prefix, _scalar(value)


def build_query(params: Mapping[str, Any]) -> str:
    """`http_build_query` of nested params: `{"fields": {"TITLE": "a b"}}` -> `fields%5BTITLE%5D=a+b`.

    Nulls and empty containers vanish (as in PHP); booleans become 1/0."""
    parts: list[str] = []
    for name, value in params.items():
        for key, text in _pairs(str(name), value):
            parts.append(f"{quote_plus(key, safe='')}={quote_plus(text, safe='')}")
    return "&".join(parts)


def _split_key(raw: str) -> list[str]:
    """`fields[PHONE][0][VALUE]` -> ["fields", "PHONE", "0", "VALUE"] (PHP parse_str rules)."""
    head, bracket, rest = raw.partition("[")
    path = [head]
    while bracket:
        inner, closing, after = rest.partition("]")
        if not closing:  # an unclosed bracket is part of the last name, as in PHP
            path[-1] += "[" + rest
            break
        path.append(inner)
        if len(path) > MAX_QUERY_DEPTH:
            raise QueryError(f"query key nests deeper than {MAX_QUERY_DEPTH} levels")
        if not after.startswith("["):
            break
        bracket, rest = "[", after[1:]
    return path


def parse_query(query: str) -> dict[str, Any]:
    """PHP's `parse_str`: nested dicts, every leaf a string, `a[]=` appending numbered keys."""
    result: dict[str, Any] = {}
    for part in query.split("&"):
        if not part:
            continue
        raw_key, _, raw_value = part.partition("=")
        path = _split_key(unquote_plus(raw_key))
        if not path[0]:
            continue
        node: dict[str, Any] = result
        for depth, name in enumerate(path):
            last = depth == len(path) - 1
            if name == "" and depth > 0:
                name = str(sum(1 for key in node if key.isdigit()))
            if last:
                node[name] = unquote_plus(raw_value)
            else:
                child = node.get(name)
                if not isinstance(child, dict):
                    child = node[name] = {}
                node = child
    return result


def command(method: str, params: Mapping[str, Any]) -> str:
    """One batch command string: `crm.deal.update?id=5&fields%5BTITLE%5D=x`."""
    query = build_query(params)
    return f"{method}?{query}" if query else method


def parse_command(text: str) -> tuple[str, dict[str, Any]]:
    """A batch command string back into (method, params)."""
    method, _, query = text.partition("?")
    method = method.strip()
    if not method or any(ch.isspace() or ch in "/&=" for ch in method):
        raise QueryError("a batch command must be `method?query`")
    return method, parse_query(query)
