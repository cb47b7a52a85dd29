"""Secret scans with teeth: search what leaves a process, before any masking, for every
secret and for any 12-character piece of one.

The JSON formatter masks token-like runs (shared/logs.py), so a scan of formatted log lines
cannot see a raw token logged as a field. These scans read the raw material instead:

- `raw_records(records)`: log records as the code made them (message, args, every `fields`
  value, extra attributes, the exception and its traceback), formatted by nobody;
- process output (stderr, stdout, a log file) as bytes or text, unparsed;
- stored job data (`stored_redis`): every value under a namespace and the RQ jobs named.

`find_leaks` returns where each leak is; `assert_no_secrets` fails with those places (a
prefix of the secret, never the secret itself). The `raw_log` fixture captures every record
this process makes during a test. Each helper has a companion test in
tests/b24pipe/test_secretscan.py that injects a leak and shows the scan fails.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pytest
import redis

PIECE = 12  # any 12 characters of a secret are a leak: enough to matter, too many for chance

# attributes every LogRecord has; anything else on a record was passed by the caller
_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {"message", "asctime"}


def pieces(secret: str, width: int = PIECE) -> set[str]:
    """Every `width`-character piece of a secret (the secret itself when it is shorter)."""
    if len(secret) <= width:
        return {secret}
    return {secret[i : i + width] for i in range(len(secret) - width + 1)}


def raw_records(records: Iterable[logging.LogRecord]) -> str:
    """Log records rendered from their raw parts, before any formatter or masking."""
    lines: list[str] = []
    for record in records:
        lines.append(repr(record.msg))
        lines.append(repr(record.args))
        with contextlib.suppress(TypeError, ValueError):  # a bad %-format: the raw parts still count
            lines.append(record.getMessage())
        for name, value in vars(record).items():
            if name not in _STANDARD:
                lines.append(f"{name}={value!r}")
        if record.exc_info and record.exc_info[1] is not None:
            lines.extend(traceback.format_exception(record.exc_info[1]))
        if record.exc_text:
            lines.append(record.exc_text)
        if record.stack_info:
            lines.append(record.stack_info)
    return "\n".join(lines)


def stored_redis(r: redis.Redis, ns: str, job_ids: Iterable[bytes | str] = ()) -> bytes:
    """Every value stored under a namespace, plus the named RQ jobs' hashes, as one blob."""
    keys: list[bytes | str] = [*r.scan_iter(match=f"*{ns}*", count=1000)]
    keys += [b"rq:job:" + (job if isinstance(job, bytes) else job.encode()) for job in job_ids]
    stored: list[bytes] = []
    for key in keys:
        kind = r.type(key)
        if kind == b"hash":
            for name, value in r.hgetall(key).items():
                stored += [name, value]
        elif kind == b"list":
            stored += r.lrange(key, 0, -1)
        elif kind == b"string":
            stored.append(r.get(key) or b"")
        elif kind in (b"set", b"zset"):
            stored += list(r.smembers(key)) if kind == b"set" else r.zrange(key, 0, -1)
        elif kind == b"stream":
            stored.append(repr(r.xrange(key)).encode())
    return b"\n".join(stored)


def find_leaks(haystacks: Mapping[str, str | bytes], secrets: Iterable[str | None]) -> list[str]:
    """Each place a secret, or a 12-character piece of one, occurs: 'where: abcd…'."""
    wanted = [s for s in secrets if s]
    found: list[str] = []
    for where, haystack in haystacks.items():
        text = haystack.decode("utf-8", "replace") if isinstance(haystack, bytes) else haystack
        for secret in wanted:
            if any(piece in text for piece in pieces(secret)):
                found.append(f"{where}: {secret[:4]}…({len(secret)})")
    return found


def assert_no_secrets(haystacks: Mapping[str, str | bytes], secrets: Iterable[str | None]) -> None:
    wanted = [s for s in secrets if s]
    assert wanted, "a secret scan needs secrets to look for"
    assert any(haystacks.values()), "a secret scan needs something to search"
    leaks = find_leaks(haystacks, wanted)
    assert not leaks, f"secrets leaked: {leaks}"


class RawLog:
    """Every record made while installed, unformatted. It hooks the record factory, so it
    sees records whatever handlers a test or the code under test (re)configures."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []

    @property
    def text(self) -> str:
        return raw_records(self.records)


@pytest.fixture
def raw_log() -> Iterator[RawLog]:
    """Every record this process makes during the test, at every level, raw (see `raw_records`)."""
    capture = RawLog()
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        capture.records.append(record)
        return record

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)  # every level: a DEBUG line leaks as much as an ERROR one
    logging.setLogRecordFactory(factory)
    try:
        yield capture
    finally:
        logging.setLogRecordFactory(previous)
        root.setLevel(level)
