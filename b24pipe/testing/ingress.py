"""Helpers for the ingress tests: seeding portals, building Bitrix24-shaped bodies, serving."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import redis
from aiohttp.test_utils import TestClient, TestServer
from rq.job import Job

from ingress.app import create_app
from ingress.delivery import Delivery
from ingress.formparse import FORM as FORM_TYPE
from ingress.formparse import parse_body
from shared import portalstore as store
from shared import rqkeys
from shared.crypto import digest
from shared.keys import Keys
from shared.portals import AcceptedToken, Portal, Status
from shared.settings import Settings

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
OK = {"status": "ok", "message": "event accepted"}
INVALID_TOKEN = {"status": "error", "error": "invalid_application_token"}
UNAVAILABLE = {"status": "error", "error": "unavailable"}


def seed_portal(
    r: redis.Redis, keys: Keys, member_id: str, token: str, kind: str = "app", status: Status = Status.ACTIVE
) -> None:
    portal = Portal(member_id=member_id, domain=f"{member_id}.bitrix24.ru", status=status)
    r.hset(keys.portal(member_id), mapping=portal.to_hash())
    r.sadd(keys.portals, member_id)
    r.hset(keys.app_tokens(member_id), digest(token), AcceptedToken(kind).encode())
    r.incr(keys.portals_version)


def seed_pending(r: redis.Redis, keys: Keys, member_id: str, token: str) -> None:
    """A pending install of `token` (its events are quarantined), as the ingress stores one."""
    pending = store.PendingInstall(
        Portal(member_id=member_id, domain=f"{member_id}.bitrix24.ru", status=Status.PENDING),
        digest(token),
        None,
        False,
        int(time.time()),
    )
    bounds = store.Bounds(ttl=3600, max_events=1000, max_pending=100, max_bytes=1 << 26, source_bytes=1 << 24)
    assert store.run(r, store.save_pending(keys, pending, bounds)) == 1


def body(
    member_id: str | None,
    token: str | None,
    event: str | None = "ONCRMDEALUPDATE",
    entity: int = 759,
    ts: int = 1736405807,
    **auth: str,
) -> str:
    fields: list[tuple[str, str]] = []
    if event is not None:
        fields.append(("event", event))
    fields += [("event_handler_id", "201"), ("data[FIELDS][ID]", str(entity)), ("ts", str(ts))]
    fields.append(("auth[domain]", f"{member_id}.bitrix24.ru"))
    if member_id is not None:
        fields.append(("auth[member_id]", member_id))
    if token is not None:
        fields.append(("auth[application_token]", token))
    fields += [(f"auth[{name}]", value) for name, value in auth.items()]
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in fields)


@asynccontextmanager
async def serve(settings: Settings, **options: Any) -> AsyncIterator[TestClient[Any, Any]]:
    """The real app on a real port (aiohttp's TestServer), startup and cleanup included."""
    app = create_app(settings, **options)
    async with TestClient(TestServer(app)) as client:
        yield client


def queued(r: redis.Redis, queue: str) -> list[bytes]:
    return [
        job_id if isinstance(job_id, bytes) else job_id.encode()
        for job_id in r.lrange(rqkeys.queue(queue), 0, -1)
    ]


def wait_http(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"ingress exited early with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise AssertionError("ingress did not start listening")


def wait_logged(process: subprocess.Popen[bytes], message: str, count: int = 1, timeout: float = 30) -> None:
    """Read the process's JSON log (stderr) until `message` was logged `count` times."""
    assert process.stderr is not None
    fd = process.stderr.fileno()  # raw reads: a buffered readline would hide lines from select
    deadline = time.monotonic() + timeout
    seen, pending = 0, b""
    while seen < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{message!r} was logged {seen} times, not {count}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"ingress exited with {process.wait()}")
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                seen += json.loads(line).get("msg") == message


@contextlib.contextmanager
def ingress_process(
    env: dict[str, str],
    port: int,
    *args: str,
    log_path: Path | None = None,
    open_files: int | tuple[int, int] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`b24pipe ingress` on `port`; its log on a pipe (see `wait_logged`), or in `log_path`
    for a test that makes it log more than a pipe holds; `open_files` caps its descriptors
    (RLIMIT_NOFILE, as systemd's LimitNOFILE does; a pair sets the soft and hard limits)."""
    log_file = open(log_path, "wb") if log_path is not None else None  # noqa: SIM115 - closed below

    def limit() -> None:
        if open_files is not None:
            pair = open_files if isinstance(open_files, tuple) else (open_files, open_files)
            resource.setrlimit(resource.RLIMIT_NOFILE, pair)

    process = subprocess.Popen(
        [sys.executable, "-m", "b24pipe", "ingress", "--host", "127.0.0.1", "--port", str(port), *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=log_file if log_file is not None else subprocess.PIPE,
        preexec_fn=limit if open_files is not None else None,
    )
    try:
        wait_http(port, process)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        if log_file is not None:
            log_file.close()


def event_id(form_body: str) -> str:
    """The id the ingress gives the event a form body carries."""
    payload = parse_body(form_body.encode(), FORM_TYPE, None, max_keys=1000, max_depth=8)
    return Delivery.model_validate(payload).event_id()


def stored_event_ids(r: redis.Redis, queue: str) -> list[str]:
    """The event ids of the jobs on `queue`, read back the way RQ reads them."""
    return [Job.fetch(job_id.decode(), connection=r).args[0]["id"] for job_id in queued(r, queue)]


async def post_event(
    session: aiohttp.ClientSession, port: int, form_body: str, timeout: float = 30
) -> tuple[int, bytes]:
    """POST one event to a real ingress; the status and body it answered."""
    async with session.post(
        f"http://127.0.0.1:{port}/b24/events",
        data=form_body,
        headers=FORM,
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as response:
        return response.status, await response.read()


async def metrics_text(session: aiohttp.ClientSession, port: int) -> str:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        return await response.text()
