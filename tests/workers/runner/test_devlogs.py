"""Logs a developer can use: the readable format and its setting, a handler's failure with
its traceback (secrets scrubbed), and each worker naming the handlers it loaded. The failing
app runs through the pytest plugin's fixtures, as an app's own test would."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

import orjson
import pytest

from b24pipe.pytest_plugin import Pipeline
from b24pipe.simportal import AppPortal
from b24pipe.testing.workers import ROOT, worker_env
from shared.logs import JsonFormatter, TextFormatter, log_format
from tests.support.failing_app_handlers import SECRET

pytestmark = pytest.mark.b24pipe(
    handlers=["tests.support.failing_app_handlers"], env={"B24PIPE_RETRY_BASE": "0.2"}
)


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    assert log_format(None, True) == "text"
    assert log_format("auto", False) == "json"
    assert log_format("json", True) == "json"
    assert log_format("text", False) == "text"


def _record_with_traceback() -> logging.LogRecord:
    try:
        raise ValueError(f"access_token={SECRET}")
    except ValueError:
        record = logging.LogRecord(
            "b24pipe.dispatch", logging.WARNING, __file__, 1, "handler failed", None, sys.exc_info()
        )
    record.fields = {"handler": "app.fn", "note": f"token {SECRET}"}
    return record


def test_the_text_format_is_readable_and_scrubbed_like_json() -> None:
    record = _record_with_traceback()
    text = TextFormatter().format(record)
    head, *trace = text.splitlines()
    assert " warning b24pipe.dispatch: handler failed  handler=app.fn note=token 9f2c…(48)" in head
    assert trace[0] == "Traceback (most recent call last):" and "ValueError: access_token=***" in trace[-1]
    assert SECRET not in text
    assert SECRET not in JsonFormatter().format(record)


def test_a_bad_log_format_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "b24pipe", "status"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "B24PIPE_LOG_FORMAT": "xml"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "B24PIPE_LOG_FORMAT" in done.stderr


def test_text_format_when_asked_and_the_worker_names_its_handlers(base_env: dict[str, str]) -> None:
    env = worker_env(base_env, B24PIPE_LOG_FORMAT="text")
    done = subprocess.run(
        [sys.executable, "-m", "b24pipe", "worker", "--burst"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    loaded = [line for line in done.stderr.splitlines() if "b24pipe.worker: handlers loaded" in line]
    assert len(loaded) == 1 and "modules=['tests.support.worker_handlers']" in loaded[0]
    assert "'ONTESTRECORD': ['tests.support.worker_handlers.record']" in loaded[0]
    assert not any(line.startswith("{") for line in done.stderr.splitlines())


def test_a_handler_failure_is_logged_with_its_traceback_and_no_secret(
    b24_portal: AppPortal, b24_pipeline: Pipeline
) -> None:
    deal = b24_portal.add({"TITLE": "Doomed"})
    b24_portal.edit(deal, {"TITLE": "Doomed again"})
    b24_portal.wait_until(lambda: b24_pipeline.logs().count('"msg":"handler failed"') >= 2)
    logs = b24_pipeline.logs()
    assert SECRET not in logs
    entries = [orjson.loads(line) for line in logs.splitlines() if line.startswith("{")]
    failed = [e for e in entries if e["msg"] == "handler failed"]
    assert [e["attempt"] for e in failed[:2]] == [1, 2] and failed[0]["next"] == "retry"
    assert failed[0]["handler"] == "tests.support.failing_app_handlers.explode"
    assert (
        failed[0]["event"] == "ONCRMDEALUPDATE" and failed[0]["member_id"] != b24_portal.member_id
    )  # masked
    assert "in explode\n    raise RuntimeError(" in failed[0]["exc"]
    assert "refresh_token=***" in failed[0]["exc"]
    loaded = [e for e in entries if e["msg"] == "handlers loaded"]
    assert loaded[0]["handlers"] == {"ONCRMDEALUPDATE": ["tests.support.failing_app_handlers.explode"]}


def test_the_logged_fixture_reads_json_even_from_a_terminal(logged: io.StringIO) -> None:
    logging.getLogger("b24pipe.x").warning("hello")
    assert orjson.loads(logged.getvalue().splitlines()[-1])["msg"] == "hello"
