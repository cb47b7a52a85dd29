"""The one Lua loader: every script loads by its path, once per client, sync and asyncio alike."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import redis
import redis.asyncio as aioredis

from shared import lua

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(
    str(p.relative_to(ROOT))
    for folder in ("shared/lua", "workers/lua")
    for p in (ROOT / folder).glob("*.lua")
)


def test_every_script_loads_by_its_path_and_compiles(r: redis.Redis) -> None:
    assert len(SCRIPTS) > 20
    for path in SCRIPTS:
        registered = lua.script(r, path)
        assert r.script_load(lua.source(path)) == registered.sha  # SCRIPT LOAD compiles it


def test_a_script_is_registered_once_per_client(redis_url: str) -> None:
    first, second = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)
    try:
        path = "shared/lua/portalstore_lock_release.lua"
        assert lua.script(first, path) is lua.script(first, path)
        assert lua.script(second, path) is not lua.script(first, path)
        assert lua.script(second, path).registered_client is second
        assert lua.script(first, path)(keys=["b24pipe-test-no-such-lock"], args=["holder"]) == 0
    finally:
        first.close()
        second.close()


def test_the_cache_does_not_keep_a_client_alive(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    lua.script(client, "shared/lua/probe_arrived.lua")
    gone = weakref.ref(client)
    client.close()
    del client
    gc.collect()
    assert gone() is None


def test_asyncio_clients_get_their_own_registration(redis_url: str) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            registered = lua.script(client, "shared/lua/probe_arrived.lua")
            assert registered is lua.script(client, "shared/lua/probe_arrived.lua")
            assert await registered(keys=["b24pipe-test-no-such-probe"], args=["marker", 1]) is None
        finally:
            await client.aclose()

    asyncio.run(run())


def test_a_registered_script_runs_again_after_the_server_forgot_it(r: redis.Redis) -> None:
    release = lua.script(r, "shared/lua/portalstore_lock_release.lua")
    r.script_flush()  # what a restarted server has forgotten
    assert release(keys=["b24pipe-test-no-such-lock"], args=["holder"]) == 0
    assert r.script_exists(release.sha) == [True]
