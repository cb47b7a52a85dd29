"""`b24pipe failed list | requeue [ID...|--all] | purge`: the dead-letter side.

Failed jobs are RQ jobs in RQ's FailedJobRegistry of our two queues (kept for
B24PIPE_FAILED_TTL), so `rq requeue` works on them too; this command adds the event view
(which event, which portal) and requeues through RQ's own registry method."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
import redis
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import BaseRegistry, FailedJobRegistry

from b24pipe.errors import CommandError, UsageError
from shared import rqkeys
from shared.keys import Keys
from shared.logs import scrub
from shared.redisconn import command_redis
from shared.settings import Settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("failed", help="failed jobs: list, requeue, purge")
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list failed jobs")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    requeue = actions.add_parser("requeue", help="put failed jobs back on their queue")
    requeue.add_argument("ids", nargs="*", metavar="ID")
    requeue.add_argument("--all", action="store_true", help="every failed job")
    actions.add_parser("purge", help="delete every failed job")
    parser.set_defaults(run=run)


def registries(client: redis.Redis, keys: Keys) -> list[FailedJobRegistry]:
    return [FailedJobRegistry(queue=Queue(name, connection=client)) for name in keys.queues]


def run(args: argparse.Namespace, settings: Settings) -> int:
    client = command_redis(settings)
    keys = Keys(settings.namespace)
    try:
        if args.action == "list":
            return _list(client, keys, args.json)
        if args.action == "requeue":
            return _requeue(client, keys, args.ids, args.all)
        return _purge(client, keys)
    except redis.RedisError as exc:
        raise CommandError(f"redis: {exc}") from None


def _row(job: Job, queue: str) -> dict[str, Any]:
    event = job.args[0] if job.func_name == "workers.dispatch.run_event" and job.args else {}
    error = (job._exc_info or "").strip().splitlines()
    return {
        "id": job.id,
        "queue": queue,
        "function": job.func_name,
        "event": event.get("name", "") if isinstance(event, dict) else "",
        "member_id": event.get("member_id", "") if isinstance(event, dict) else "",
        "failed_at": job.ended_at.isoformat() if job.ended_at else "",
        "error": scrub(error[-1]) if error else "",
    }


def _list(client: redis.Redis, keys: Keys, as_json: bool) -> int:
    for registry in registries(client, keys):
        for job_id in registry.get_job_ids():
            try:
                row = _row(Job.fetch(job_id, connection=client), registry.name)
            except NoSuchJobError:
                continue
            if as_json:
                sys.stdout.write(orjson.dumps(row).decode() + "\n")
            else:
                print(
                    f"{row['id']}  {row['queue']}  {row['event'] or row['function']}  {row['member_id']}  {row['failed_at']}  {row['error']}"
                )
    return 0


def _requeue(client: redis.Redis, keys: Keys, ids: list[str], every: bool) -> int:
    if every == bool(ids):
        raise UsageError("failed requeue: give job IDs or --all (not both)")
    found_in = registries(client, keys)
    wanted = (
        [(registry, job_id) for registry in found_in for job_id in registry.get_job_ids()] if every else []
    )
    if not every:
        for job_id in ids:
            found = next((reg for reg in found_in if client.zscore(reg.key, job_id) is not None), None)
            if found is None:
                raise CommandError(f"no failed job {job_id!r}")
            wanted.append((found, job_id))
    for registry, job_id in wanted:
        requeue(client, registry, job_id)
    print(f"requeued {len(wanted)} job(s)")
    return 0


def requeue(client: redis.Redis, registry: BaseRegistry, job_id: str) -> bool:
    """Put one job of a registry back on its queue with fresh attempts (False: it is gone)."""
    try:
        client.hdel(Job.key_for(job_id), "b24_attempts", "b24_slot")
        registry.requeue(job_id)
    except (NoSuchJobError, InvalidJobOperation):
        return False
    return True


def _purge(client: redis.Redis, keys: Keys) -> int:
    count = 0
    for registry in registries(client, keys):
        job_ids = registry.get_job_ids()
        with client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.zrem(registry.key, job_id)
                pipe.delete(Job.key_for(job_id), rqkeys.results(job_id), rqkeys.executions(job_id))
            pipe.execute()
        count += len(job_ids)
    print(f"purged {count} job(s)")
    return 0
