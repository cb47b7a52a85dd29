"""The secret scans have teeth: each injects a leak the masking formatter would hide, or a
piece of a secret, into what a scan reads, and shows the scan fails."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import redis

from shared.logs import JsonFormatter, configure_logging, log
from tests.support.secretscan import RawLog, assert_no_secrets, find_leaks, pieces, raw_records, stored_redis

TOKEN = "4f1c9e0a7b3d4c2e8f6a1b0c9d8e7f6a"  # 32 hex digits: an application token's shape
ACCESS = "a1b2c3d4e5f60718293a4b5c6d7e8f90abcdef0123456789abcdef0123456789abcdef01"

logger = logging.getLogger("b24pipe.test.secretscan")


def test_pieces_are_every_twelve_character_window() -> None:
    assert pieces("0123456789abcd") == {"0123456789ab", "123456789abc", "23456789abcd"}
    assert pieces("short") == {"short"}


def test_a_token_logged_as_a_field_is_masked_by_the_formatter_but_found_raw(raw_log: RawLog) -> None:
    configure_logging("INFO")
    try:
        log(logger, logging.WARNING, "refresh failed", refresh_token=ACCESS)
        formatted = "\n".join(JsonFormatter().format(record) for record in raw_log.records)
    finally:
        logging.getLogger().handlers.clear()
    assert not find_leaks({"formatted": formatted}, [ACCESS])  # the formatter's scrub hides it
    with pytest.raises(AssertionError, match="secrets leaked"):
        assert_no_secrets({"raw log": raw_log.text}, [ACCESS])


def test_a_piece_of_a_secret_in_an_exception_is_found(raw_log: RawLog) -> None:
    try:
        raise RuntimeError(f"bad grant ...{TOKEN[5:19]}...")
    except RuntimeError:
        logger.exception("call failed")
    assert raw_log.records, "the record factory saw nothing"
    with pytest.raises(AssertionError, match=r"raw log: 4f1c…\(32\)"):
        assert_no_secrets({"raw log": raw_log.text}, [TOKEN])


def test_a_secret_in_a_percent_argument_is_found() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token %s", (TOKEN,), None)
    assert find_leaks({"raw": raw_records([record])}, [TOKEN]) == ["raw: 4f1c…(32)"]


def test_raw_stderr_of_a_process_is_scanned() -> None:
    code = f"import sys; sys.stderr.write('oops {TOKEN[-12:]}\\n')"
    stderr = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stderr
    with pytest.raises(AssertionError, match="stderr"):
        assert_no_secrets({"stderr": stderr}, [TOKEN])
    assert not find_leaks({"stderr": stderr}, [ACCESS])


def test_stored_job_data_is_scanned(r: redis.Redis, ns: str) -> None:
    r.hset(f"b24:{ns}:portal:m1", mapping={"status": "active"})
    assert_no_secrets({"redis": stored_redis(r, ns)}, [TOKEN])  # clean data passes
    r.hset(f"rq:job:{ns}-1", mapping={"data": b"\x80\x05" + TOKEN[:12].encode()})
    with pytest.raises(AssertionError, match="redis"):
        assert_no_secrets({"redis": stored_redis(r, ns, [f"{ns}-1"])}, [TOKEN])
    r.delete(f"rq:job:{ns}-1")


def test_a_scan_with_nothing_to_search_or_find_fails() -> None:
    with pytest.raises(AssertionError, match="needs secrets"):
        assert_no_secrets({"x": "text"}, [None, ""])
    with pytest.raises(AssertionError, match="needs something"):
        assert_no_secrets({"x": ""}, [TOKEN])
