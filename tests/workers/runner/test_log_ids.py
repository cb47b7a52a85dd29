"""Job and event ids stay readable in log lines (to match them with `failed list`, rq info or
rq-dashboard) while secrets in any other field, or in the message, are still masked."""

from __future__ import annotations

import io
import json
import logging
import uuid

from shared.logs import JsonFormatter, log

TOKEN = "abcdefabcdefabcdefabcdefabcdef0123456789"


def test_ids_are_readable_and_secrets_masked() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("b24pipe.test-ids")
    logger.handlers[:] = [handler]
    logger.propagate = False
    job_id, event_id = uuid.uuid4().hex, uuid.uuid4().hex + uuid.uuid4().hex[:8]
    log(
        logger, logging.WARNING, f"job failed with {TOKEN}", job=job_id, event_id=event_id, error=f"x {TOKEN}"
    )
    line = json.loads(stream.getvalue())
    assert line["job"] == job_id and line["event_id"] == event_id
    assert TOKEN not in line["msg"] and TOKEN not in line["error"]
