"""Structured JSON logs, the security log, and the masking every log line goes through.

Two rules hold for every line b24pipe writes:
- secrets are masked before they reach a formatter (`mask`), and as a second line of
  defence every string field is scrubbed of values that look like tokens (`scrub`);
- the security log (`security_event`) names what happened with fixed field names, never
  personal data (no names, e-mails, phones, entity contents).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any

import orjson

SECURITY_LOGGER = "b24pipe.security"

# Bitrix24 tokens are long runs of hex or base64-url characters; an access token is
# 70+ characters, an application token 32 hex digits. Anything that long and unbroken
# in a log line is treated as a secret.
_SECRET_RUN = re.compile(r"(?<![A-Za-z0-9_\-.])[A-Za-z0-9_\-]{28,}(?![A-Za-z0-9_\-])")
_SECRET_PARAM = re.compile(
    r"(?i)((?:access_token|refresh_token|application_token|client_secret|auth|AUTH_ID|REFRESH_ID|"
    r"APPLICATION_TOKEN|password|secret|code)=)[^&\s\"']+"
)


def mask(secret: str | None) -> str:
    """Enough of a secret to correlate log lines, never enough to use it."""
    if not secret:
        return "<none>"
    return f"{secret[:4]}…({len(secret)})"


def scrub(text: str) -> str:
    """Remove anything that looks like a secret from free text (exception messages, URLs)."""
    text = _SECRET_PARAM.sub(lambda m: m.group(1) + "***", text)
    return _SECRET_RUN.sub(lambda m: mask(m.group(0)), text)


# b24pipe's own identifiers are long hex runs too (RQ job ids, event ids, worker names), but
# never secrets: fields with these names are left readable, so a log line can be matched
# with `b24pipe failed list`, `rq info` or rq-dashboard. Secrets never go in these fields.
IDENTIFIER_FIELDS = frozenset({"job", "job_id", "event_id", "worker"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry[key] = (
                    scrub(value) if isinstance(value, str) and key not in IDENTIFIER_FIELDS else value
                )
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(JsonFormatter):
    """One readable line per record (`12:00:01 warning b24pipe.dispatch handler failed k=v`),
    the traceback below it: for a developer's terminal. Scrubbed exactly like the JSON lines."""

    def format(self, record: logging.LogRecord) -> str:
        entry = orjson.loads(super().format(record))
        stamp = time.strftime("%H:%M:%S", time.localtime(entry.pop("ts")))
        head = f"{stamp} {entry.pop('level'):<7} {entry.pop('logger')}: {entry.pop('msg')}"
        trace = entry.pop("exc", None)
        fields = " ".join(f"{key}={value}" for key, value in entry.items())
        line = f"{head}  {fields}" if fields else head
        return f"{line}\n{trace}" if trace else line


def log_format(setting: str | None, stream_is_terminal: bool) -> str:
    """`B24PIPE_LOG_FORMAT`: `json`, `text`, or `auto` (unset): text on a terminal, else JSON."""
    chosen = (setting or "auto").strip().lower()
    if chosen == "auto":
        return "text" if stream_is_terminal else "json"
    return chosen


def configure_logging(level: str = "INFO", fmt: str | None = None) -> None:
    """Install the formatter on the root logger (once, at process start): JSON lines unless
    `fmt` (default: `B24PIPE_LOG_FORMAT`, validated by the settings) picks text."""
    handler = logging.StreamHandler(sys.stderr)
    chosen = log_format(fmt or os.environ.get("B24PIPE_LOG_FORMAT"), sys.stderr.isatty())
    handler.setFormatter(TextFormatter() if chosen == "text" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "rq.worker", "rq.queue"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log `msg` with structured fields (the formatter puts them at the top level)."""
    logger.log(level, msg, extra={"fields": fields})


_security = logging.getLogger(SECURITY_LOGGER)


def security_event(kind: str, **fields: Any) -> None:
    """A security-log line: `kind` names what happened (token_rejected, token_changed,
    install_verified, install_refused, revoked, refresh_failed, limit_hit, ...).

    Callers pass secrets only through `mask()`; the formatter scrubs again anyway."""
    log(_security, logging.WARNING, kind, security=True, event_kind=kind, at=int(time.time()), **fields)
