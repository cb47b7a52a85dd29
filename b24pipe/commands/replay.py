"""`b24pipe replay [filters] [--dry-run] [--handled]`: run selected events again.

By default it selects failed jobs (RQ's FailedJobRegistry of our two queues), like `failed
requeue`, but by filter: portal, event, the handler that failed, an error code or exception
name in the failure text, and a time range of the failure. It prints how many match first;
`--dry-run` stops there. Otherwise it requeues them (failed handlers start with fresh attempts,
handlers that had succeeded are not rerun) with a progress bar on stderr.

`--handled` selects events that were handled successfully instead, kept in RQ's
FinishedJobRegistry for `B24PIPE_EVENT_LOG_TTL` seconds (off by default: then only RQ's
result TTL of 500 s); they run again through every handler.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from rq import Queue
from rq.job import Job
from rq.registry import BaseRegistry, FinishedJobRegistry

from b24pipe.commands.failed import registries as failed_registries
from b24pipe.commands.failed import requeue
from b24pipe.errors import CommandError, UsageError
from shared.keys import Keys
from shared.redisconn import sync_redis
from shared.settings import Settings
from workers.dispatch import RUN_EVENT

_AGO = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_HANDLER_ID = re.compile(r"^[A-Za-z_][\w.]*$")
_BAR = 24


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("replay", help="requeue failed (or handled) events selected by filter")
    parser.add_argument("--portal", metavar="MEMBER_ID", help="only this portal's events")
    parser.add_argument("--event", metavar="NAME", help="only this event (e.g. ONCRMDEALUPDATE)")
    parser.add_argument(
        "--handler", metavar="ID", help="only events this handler failed on (id or function name)"
    )
    parser.add_argument(
        "--error",
        metavar="CODE",
        help="only failures naming this error code or exception (e.g. ACCESS_DENIED)",
    )
    parser.add_argument("--since", metavar="WHEN", help="ISO 8601 time, or a duration ago: 30m, 2h, 7d")
    parser.add_argument("--until", metavar="WHEN", help="ISO 8601 time, or a duration ago")
    parser.add_argument("--dry-run", action="store_true", help="print how many events match, requeue nothing")
    parser.add_argument(
        "--handled",
        action="store_true",
        help="handled events (kept for B24PIPE_EVENT_LOG_TTL), not failed ones",
    )
    parser.set_defaults(run=run)


@dataclass(frozen=True, slots=True)
class Filters:
    portal: str | None = None
    event: str | None = None
    handler: str | None = None
    error: str | None = None
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    job_id: str
    member_id: str
    event: str
    error: str
    ended_at: float | None


def parse_when(text: str, now: float) -> float:
    """Unix time of `--since`/`--until`: ISO 8601 (UTC unless it says otherwise) or 'N{s,m,h,d}' ago."""
    ago = _AGO.match(text.strip())
    if ago:
        return now - int(ago.group(1)) * _UNIT[ago.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"replay: {text!r} is neither an ISO 8601 time nor a duration like 30m, 2h, 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def failed_handlers(error: str) -> set[str]:
    """Handler ids a failure text names (dispatch writes '<handler id>: <error>; ...')."""
    last = error.strip().splitlines()[-1] if error.strip() else ""
    found = set()
    for part in last.split("; "):
        head = part.split(": ", 1)[0]
        if _HANDLER_ID.match(head) and "." in head:
            found.add(head)
    return found


def matches(candidate: Candidate, filters: Filters) -> bool:
    """Whether a job passes every filter given (pure)."""
    if filters.portal is not None and candidate.member_id != filters.portal:
        return False
    if filters.event is not None and candidate.event.upper() != filters.event.upper():
        return False
    if filters.handler is not None:
        wanted = filters.handler
        if not any(h == wanted or h.endswith("." + wanted) for h in failed_handlers(candidate.error)):
            return False
    if filters.error is not None and not re.search(rf"\b{re.escape(filters.error)}\b", candidate.error):
        return False
    if filters.since is not None and (candidate.ended_at is None or candidate.ended_at < filters.since):
        return False
    return not (
        filters.until is not None and (candidate.ended_at is None or candidate.ended_at > filters.until)
    )


def _candidate(job: Job) -> Candidate:
    event = job.args[0] if job.func_name == RUN_EVENT and job.args and isinstance(job.args[0], dict) else {}
    return Candidate(
        job_id=job.id,
        member_id=str(event.get("member_id", "")),
        event=str(event.get("name", "")),
        error=job._exc_info or "",
        ended_at=job.ended_at.timestamp() if job.ended_at else None,
    )


def _registries(client: redis.Redis, keys: Keys, handled: bool) -> list[BaseRegistry]:
    if handled:
        return [FinishedJobRegistry(queue=Queue(name, connection=client)) for name in keys.queues]
    return list(failed_registries(client, keys))


def _selected(
    client: redis.Redis, keys: Keys, filters: Filters, handled: bool
) -> Iterator[tuple[BaseRegistry, Job]]:
    for registry in _registries(client, keys, handled):
        job_ids = registry.get_job_ids()
        for job in Job.fetch_many(job_ids, connection=client):
            if job is not None and matches(_candidate(job), filters):
                yield registry, job


def _progress(done: int, total: int) -> None:
    """A progress bar on stderr: redrawn in place on a terminal, else about 20 lines in all."""
    step = max(1, total // 20)
    if not sys.stderr.isatty() and done % step and done != total:
        return
    filled = _BAR * done // total
    end = "\r" if sys.stderr.isatty() and done < total else "\n"
    sys.stderr.write(f"replay [{'#' * filled}{'.' * (_BAR - filled)}] {done}/{total}{end}")
    sys.stderr.flush()


def run(args: argparse.Namespace, settings: Settings) -> int:
    now = time.time()
    filters = Filters(
        portal=args.portal,
        event=args.event,
        handler=args.handler,
        error=args.error,
        since=parse_when(args.since, now) if args.since else None,
        until=parse_when(args.until, now) if args.until else None,
    )
    client = sync_redis(settings)
    keys = Keys(settings.namespace)
    try:
        chosen = list(_selected(client, keys, filters, args.handled))
        print(f"{len(chosen)} {'handled' if args.handled else 'failed'} job(s) match")
        if args.dry_run or not chosen:
            return 0
        replayed = 0
        for done, (registry, job) in enumerate(chosen, start=1):
            if args.handled and (event_id := _candidate_event_id(job)):
                client.delete(keys.handler_done(event_id))  # every handler runs again
            replayed += requeue(client, registry, job.id)
            _progress(done, len(chosen))
        print(f"replayed {replayed} job(s)")
    except redis.RedisError as exc:
        raise CommandError(f"redis: {exc}") from None
    return 0


def _candidate_event_id(job: Job) -> str | None:
    event = job.args[0] if job.func_name == RUN_EVENT and job.args and isinstance(job.args[0], dict) else {}
    return str(event["id"]) if event.get("id") else None
