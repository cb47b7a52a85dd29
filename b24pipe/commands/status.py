"""`b24pipe status [--json]`: queues, workers, portals and limiter state at a glance.

Everything is read from Redis, so it works from any host that can reach it. The JSON form
is stable and documented in the README (section "Operating b24pipe").
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import orjson
import redis

from b24pipe.errors import CommandError
from shared import rqkeys
from shared.keys import Keys
from shared.portals import Portal, as_text
from shared.redisconn import command_redis, redacted
from shared.settings import Settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("status", help="queues, workers, portals, limiter state")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)


def _age(enqueued_at: bytes | str | None, now: float) -> float | None:
    """Seconds since RQ's `enqueued_at` (an ISO timestamp in UTC)."""
    if not enqueued_at:
        return None
    try:
        stamp = datetime.fromisoformat(as_text(enqueued_at).replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return round(max(0.0, now - stamp.timestamp()), 3)


# The registries in the report, under the names their RQ keys carry.
_REGISTRIES = {
    "wip": rqkeys.STARTED,
    "scheduled": rqkeys.SCHEDULED,
    "failed": rqkeys.FAILED,
    "finished": rqkeys.FINISHED,
    "deferred": rqkeys.DEFERRED,
}


def _queue(client: redis.Redis, name: str, now: float) -> dict[str, Any]:
    depth = int(client.llen(rqkeys.queue(name)))
    oldest = client.lindex(rqkeys.queue(name), 0)
    age = _age(client.hget(rqkeys.job(as_text(oldest)), "enqueued_at"), now) if oldest else None
    registries = {registry: int(client.zcard(prefix + name)) for registry, prefix in _REGISTRIES.items()}
    return {"name": name, "depth": depth, "oldest_age_seconds": age, "registries": registries}


def collect(client: redis.Redis, settings: Settings, now: float | None = None) -> dict[str, Any]:
    keys = Keys(settings.namespace)
    if now is None:  # Redis's clock: heartbeats are written in it, whatever the hosts' clocks say
        seconds, micros = client.time()
        now = seconds + micros / 1e6
    workers = {
        as_text(name): round(now - float(beat), 1) for name, beat in client.hgetall(keys.workers).items()
    }
    portals: list[dict[str, Any]] = []
    for member in sorted(client.smembers(keys.portals)):
        raw = client.hgetall(keys.portal(as_text(member)))
        if not raw:
            continue
        portal = Portal.from_hash(raw)
        bucket = client.hget(keys.rate_bucket(portal.member_id, settings.rate_scope), "level")
        portals.append(
            {
                "member_id": portal.member_id,
                "domain": portal.domain,
                "status": str(portal.status),
                "limiter_level": float(bucket) if bucket is not None else 0.0,
            }
        )
    return {
        "namespace": settings.namespace,
        "ack": settings.ack,
        "queues": [_queue(client, name, now) for name in keys.queues],
        "workers": [{"name": name, "heartbeat_age_seconds": age} for name, age in sorted(workers.items())],
        "portals": portals,
    }


def render(report: dict[str, Any]) -> str:
    lines = [f"namespace {report['namespace']}", f"ack {report['ack']}", "queues:"]
    for queue in report["queues"]:
        age = queue["oldest_age_seconds"]
        registries = " ".join(f"{k}={v}" for k, v in queue["registries"].items())
        lines.append(
            f"  {queue['name']:<32} depth={queue['depth']} oldest={'-' if age is None else f'{age:.1f}s'} {registries}"
        )
    lines.append(f"workers: {len(report['workers'])}")
    lines.extend(f"  {w['name']} (heartbeat {w['heartbeat_age_seconds']}s ago)" for w in report["workers"])
    lines.append(f"portals: {len(report['portals'])}")
    lines.extend(
        f"  {p['member_id']:<34} {p['status']:<8} {p['domain']} limiter={p['limiter_level']:.1f}"
        for p in report["portals"]
    )
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    client = command_redis(settings)
    try:
        report = collect(client, settings)
    except redis.RedisError as exc:
        raise CommandError(
            f"cannot read Redis at {redacted(settings.redis_url_or_default())}: {exc}"
        ) from None
    finally:
        client.close()
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if args.json else render(report))
    return 0
