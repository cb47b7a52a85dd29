"""Stopping the ingress's background loops for sure.

Cancelling a task is a request, and a cancellation that arrives in the middle of a Redis
command can be swallowed on its way out (a library turning it into an error the loop
handles): the SIGTERM drain test once saw the token poller sleep on after `cancel()` and
shutdown hang. So each loop also checks a flag its owner clears, and stopping waits for the
tasks a bounded time, never forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from shared.logs import log

_logger = logging.getLogger("b24pipe.ingress.tasks")


async def stop_tasks(tasks: Sequence[asyncio.Task[Any]], patience: float) -> None:
    """Cancel `tasks` and wait for them to end, at most `patience` seconds."""
    running = [task for task in tasks if not task.done()]
    for task in running:
        task.cancel()
    if running:
        _, stuck = await asyncio.wait(running, timeout=patience)
        if stuck:
            log(
                _logger,
                logging.WARNING,
                "background tasks did not stop",
                tasks=sorted(t.get_name() for t in stuck),
            )
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: whatever ended it is no longer news at shutdown
