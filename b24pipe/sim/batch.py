"""`batch`: up to 50 commands in one request, with `$result[key][field]` references.

Always HTTP 200 (once the batch itself is admitted); per-command results and errors sit in
`result.result` / `result.result_error`. Commands past the 50th fail with
ERROR_BATCH_LENGTH_EXCEEDED; a nested batch is refused; `halt=1` stops at the first error.
Each command is charged to its own method's operating time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from b24pipe.sim.errors import RestError
from b24pipe.sim.methods import Answer, Call
from b24pipe.sim.phpform import parse_str, php_urlencode
from b24pipe.sim.timeblock import time_block

MAX_COMMANDS = 50
_REF = re.compile(r"\$result\[([^\]]*)\]((?:\[[^\]]*\])*)")
_PART = re.compile(r"\[([^\]]*)\]")

Execute = Callable[[str, Call], Answer]


def _resolve(results: dict[str, Any], match: re.Match[str]) -> str:
    value: Any = results.get(match.group(1))
    for part in _PART.findall(match.group(2)):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            value = None
    if value is None or isinstance(value, dict | list):
        return ""
    return php_urlencode("1" if value is True else "0" if value is False else str(value))


def _php(mapping: dict[str, Any]) -> dict[str, Any] | list[Any]:
    """What PHP's json_encode makes of an array: keys exactly 0..n-1 in order (commands named
    "0", "1", ... that all answered) give a JSON list, an empty array `[]`, anything else an
    object."""
    if list(mapping) == [str(index) for index in range(len(mapping))]:
        return list(mapping.values())
    return mapping


def run_batch(call: Call, execute: Execute) -> Answer:
    commands = call.params.get("cmd") or {}
    if isinstance(commands, list):
        commands = {str(index): line for index, line in enumerate(commands)}
    if not isinstance(commands, dict):
        raise RestError(400, "ERROR_ARGUMENT", "cmd must be an array of commands")
    halt = str(call.params.get("halt", "0")) in ("1", "true", "Y")
    portal = call.portal
    results: dict[str, Any] = {}
    failures: dict[str, Any] = {}
    totals: dict[str, Any] = {}
    nexts: dict[str, Any] = {}
    times: dict[str, Any] = {}
    for index, (key, line) in enumerate(commands.items()):
        name, _, query = str(line).partition("?")
        name = name.strip().lower().removesuffix(".json")
        start = portal.clock.time()
        try:
            if index >= MAX_COMMANDS:
                raise RestError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
            if name == "batch":
                raise RestError(
                    400, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"
                )
            params = parse_str(_REF.sub(lambda m: _resolve(results, m), query))
            answer = execute(name, Call(portal, call.user_id, params, call.changes))
        except RestError as exc:
            failures[key] = exc.body()
            if halt:
                break
            continue
        results[key] = answer.result
        if answer.total is not None:
            totals[key] = answer.total
        if answer.next is not None:
            nexts[key] = answer.next
        times[key] = time_block(portal, name, start, portal.operating.cost(name))
    return Answer(
        {
            "result": _php(results),
            "result_error": _php(failures),
            "result_total": _php(totals),
            "result_next": _php(nexts),
            "result_time": _php(times),
        }
    )
