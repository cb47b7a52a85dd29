"""PHP's `http_build_query` and `parse_str`, the encoding Bitrix24 uses for events and forms.

Bitrix24 POSTs events as PHP builds them: nested arrays flattened to bracket keys, the
brackets percent-encoded (`data%5BFIELDS%5D%5BID%5D=1`), spaces as `+`, `null` skipped,
empty arrays dropped, booleans as `1`/`0`. The ingress parser's property tests use
`http_build_query` as the reference for what PHP produces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote_plus


def php_urlencode(value: str) -> str:
    """PHP `urlencode`: like `quote_plus` with nothing safe, and `~` encoded too."""
    return quote_plus(value, safe="").replace("~", "%7E")


def _scalar(value: object) -> str:
    if value is True:
        return "1"
    if value is False:
        return "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _pairs(prefix: str, value: object, out: list[tuple[str, str]]) -> None:
    if value is None:
        return
    items: Sequence[tuple[object, object]]
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, list | tuple):
        items = list(enumerate(value))
    else:
        out.append((prefix, _scalar(value)))
        return
    for key, item in items:
        _pairs(f"{prefix}%5B{php_urlencode(_scalar(key))}%5D", item, out)


def http_build_query(data: Mapping[str, Any]) -> str:
    """Encode a nested mapping exactly as PHP's `http_build_query($data)` does."""
    out: list[tuple[str, str]] = []
    for key, value in data.items():
        _pairs(php_urlencode(_scalar(key)), value, out)
    return "&".join(f"{key}={php_urlencode(value)}" for key, value in out)


_KEY = re.compile(r"^([^\[]+)((?:\[[^\]]*\])*)")
_PART = re.compile(r"\[([^\]]*)\]")


def _listify(node: Any) -> Any:
    """PHP arrays with keys 0..n-1 read back as lists (e.g. `select[]=ID&select[]=TITLE`)."""
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and list(converted) == [str(index) for index in range(len(converted))]:
        return list(converted.values())
    return converted


def parse_str(query: str, max_depth: int = 8) -> dict[str, Any]:
    """Decode a query string with bracket keys into nested dicts (PHP `parse_str`)."""
    root: dict[str, Any] = {}
    for raw_key, value in parse_qsl(query, keep_blank_values=True):
        match = _KEY.match(raw_key)
        if not match:
            continue
        parts = [match.group(1), *_PART.findall(match.group(2))][: max_depth + 1]
        node = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            key = str(sum(1 for k in node if k.isdigit())) if part == "" else part
            if last:
                node[key] = value
            else:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = {}
                    node[key] = child
                node = child
    return {key: _listify(value) for key, value in root.items()}
