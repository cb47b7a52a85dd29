"""`B24PIPE_ACK`, `/readyz` and managed Redis, against real servers the tests start: Redis
7.0 (`redis-server`, no WAITAOF), the bundled Valkey (WAITAOF), a replica, a server whose
ACL refuses CONFIG. The ingress app runs in-process on a real port."""

from __future__ import annotations

import asyncio
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from b24pipe.redisserver import LocalServer, bundled_binary, start_server
from b24pipe.testing.ingress import FORM, body, seed_portal, serve
from b24pipe.testing.workers import wait_for
from shared.keys import Keys
from shared.settings import Settings, load_settings
from tests.conftest import PrivateRedis

TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


def _redis_7_0() -> str:
    found = shutil.which("redis-server")
    assert found, "redis-server is not installed (make test installs it: APT_TOOLS)"
    return found


@pytest.fixture
def servers() -> Iterator[list[LocalServer]]:
    started: list[LocalServer] = []
    yield started
    for server in reversed(started):
        server.stop()


def _settings(url: str, ns: str, **overrides: Any) -> Settings:
    return load_settings(redis_url=url, namespace=ns, **overrides)


async def _post_and_ready(settings: Settings, entity: int = 1) -> tuple[int, int, dict[str, Any]]:
    async with serve(settings) as client:
        posted = await client.post("/b24/events", data=body("m1", TOKEN, entity=entity), headers=FORM)
        ready = await client.get("/readyz")
        return posted.status, ready.status, orjson.loads(await ready.read())


def _has_waitaof(client: redis.Redis) -> bool:
    try:
        client.execute_command("WAITAOF", 0, 0, 1)
    except redis.ResponseError:
        return False
    return True


def test_written_is_the_default_and_readyz_names_it(
    settings: Settings, ns: str, keys: Keys, r: redis.Redis
) -> None:
    seed_portal(r, keys, "m1", TOKEN)
    posted, ready, report = asyncio.run(_post_and_ready(settings))
    assert (posted, ready) == (200, 200)
    assert report == {"status": "ok", "ack": "written", "durability": "verified"}


@pytest.mark.parametrize("kind", ["redis-7.0", "valkey"])
def test_fsync_waits_for_the_disk_or_refuses(
    kind: str, servers: list[LocalServer], tmp_path: Path, ns: str, settings: Settings
) -> None:
    binary = _redis_7_0() if kind == "redis-7.0" else bundled_binary()
    server = start_server(tmp_path / kind, binary=binary)
    servers.append(server)
    client = redis.Redis(port=server.port)
    seed_portal(client, Keys(ns), "m1", TOKEN)
    fsync = _settings(server.url, ns, ack="fsync")
    posted, ready, report = asyncio.run(_post_and_ready(fsync))
    if _has_waitaof(client):  # Valkey: WAITAOF 1 0 after each batch confirms the fsync
        assert (posted, ready, report["ack"]) == (200, 200, "fsync")
    else:  # everysec and no WAITAOF: nothing can confirm an fsync, so no 200
        assert (posted, ready) == (503, 503)
        assert "appendfsync always" in report["problems"][0]
        assert client.llen(f"rq:queue:{Keys(ns).events_queue}") == 0
        client.config_set("appendfsync", "always")  # the operator's fix, no restart needed
        posted, ready, report = asyncio.run(_post_and_ready(fsync, entity=2))
        assert (posted, ready, report["ack"]) == (200, 200, "fsync")
    assert client.llen(f"rq:queue:{Keys(ns).events_queue}") == 1


def test_replica_mode_answers_200_only_once_a_replica_has_the_batch(
    servers: list[LocalServer], tmp_path: Path, ns: str, settings: Settings
) -> None:
    primary = start_server(tmp_path / "primary")
    servers.append(primary)
    client = redis.Redis(port=primary.port)
    seed_portal(client, Keys(ns), "m1", TOKEN)
    replica_mode = _settings(primary.url, ns, ack="replica", enqueue_timeout=1.0)
    posted, ready, report = asyncio.run(_post_and_ready(replica_mode))
    assert (posted, ready, report["ack"]) == (503, 200, "replica")  # no replica: WAIT 1 times out
    replica = start_server(tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(primary.port)])
    servers.append(replica)
    replica_client = redis.Redis(port=replica.port)
    assert wait_for(lambda: replica_client.info("replication").get("master_link_status") == "up", timeout=30)
    posted, _, _ = asyncio.run(_post_and_ready(replica_mode, entity=2))
    assert posted == 200
    queue = f"rq:queue:{Keys(ns).events_queue}"
    assert replica_client.llen(queue) >= 1  # the 200 came after the replica had it


def test_managed_redis_refusing_config_is_unknown_not_down_unless_strict(
    private_redis: PrivateRedis, ns: str, settings: Settings, logged: io.StringIO
) -> None:
    admin = private_redis.client()
    admin.acl_setuser(
        "app", enabled=True, passwords=["+apppw"], keys=["*"], channels=["*"], commands=["+@all", "-config"]
    )
    seed_portal(admin, Keys(ns), "m1", TOKEN)
    url = f"redis://app:apppw@127.0.0.1:{private_redis.port}/0"

    async def scenario(strict: bool) -> tuple[int, int, dict[str, Any], str]:
        async with serve(_settings(url, ns, durability_strict=strict)) as client:
            posted = await client.post("/b24/events", data=body("m1", TOKEN), headers=FORM)
            ready = await client.get("/readyz")
            metrics = await (await client.get("/metrics")).text()
            return posted.status, ready.status, orjson.loads(await ready.read()), metrics

    posted, ready, report, metrics = asyncio.run(scenario(strict=False))
    assert (posted, ready) == (200, 200)
    assert report == {"status": "ok", "ack": "written", "durability": "unknown"}
    assert "b24pipe_redis_durability_unknown 1.0" in metrics
    assert "redis durability unknown" in logged.getvalue()
    posted, ready, report, _ = asyncio.run(scenario(strict=True))
    assert ready == 503 and report["durability"] == "unknown"
    assert "B24PIPE_DURABILITY_STRICT" in report["problems"][0]


def test_after_a_restart_the_first_event_is_200_not_a_stale_connection_503(
    private_redis: PrivateRedis, ns: str, settings: Settings
) -> None:
    seed_portal(private_redis.client(), Keys(ns), "m1", TOKEN)

    async def scenario() -> list[int]:
        async with serve(_settings(private_redis.url, ns)) as client:
            statuses = []
            for entity in range(1, 4):
                sent = await client.post("/b24/events", data=body("m1", TOKEN, entity=entity), headers=FORM)
                statuses.append(sent.status)
            private_redis.kill()
            private_redis.start()  # answers PING when this returns: Redis is back
            for entity in range(10, 25):
                sent = await client.post("/b24/events", data=body("m1", TOKEN, entity=entity), headers=FORM)
                statuses.append(sent.status)
            return statuses

    assert asyncio.run(scenario()) == [200] * 18


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    private_redis: PrivateRedis, ns: str, settings: Settings, logged: io.StringIO
) -> None:
    seed_portal(private_redis.client(), Keys(ns), "m1", TOKEN)

    async def scenario() -> list[int]:
        async with serve(_settings(private_redis.url, ns, enqueue_timeout=0.3)) as client:
            statuses = []
            for entity in range(1, 3):
                sent = await client.post("/b24/events", data=body("m1", TOKEN, entity=entity), headers=FORM)
                statuses.append(sent.status)
            private_redis.kill()
            for entity in range(10, 16):
                sent = await client.post("/b24/events", data=body("m1", TOKEN, entity=entity), headers=FORM)
                statuses.append(sent.status)
            private_redis.start()
            seed_portal(private_redis.client(), Keys(ns), "m1", TOKEN)
            for entity in range(20, 23):
                sent = await client.post("/b24/events", data=body("m1", TOKEN, entity=entity), headers=FORM)
                statuses.append(sent.status)
            return statuses

    assert asyncio.run(scenario()) == [200] * 2 + [503] * 6 + [200] * 3
    lines = [orjson.loads(line)["msg"] for line in logged.getvalue().splitlines() if line.startswith("{")]
    assert lines.count("enqueue batch failed") == 1
    assert lines.count("enqueue works again") == 1
