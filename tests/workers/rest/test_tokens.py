"""The token store's atomics against a real Redis: compare-and-set on the refresh token used,
and the lock release that never frees someone else's lease."""

from __future__ import annotations

from typing import cast

import redis

from shared import lua
from shared.crypto import TokenCipher
from shared.keys import Keys
from shared.portals import Portal


def _seed(r: redis.Redis, keys: Keys, cipher: TokenCipher) -> Portal:
    portal = Portal(member_id="m1", domain="p.example")
    portal.seal_tokens(cipher, "access-1", "refresh-1", 2000)
    r.hset(keys.portal("m1"), mapping=portal.to_hash())
    return portal


def test_cas_saves_only_over_the_refresh_token_used(r: redis.Redis, keys: Keys, token_key: str) -> None:
    import base64

    cipher = TokenCipher([base64.b64decode(token_key)])
    cas = lua.script(r, "workers/lua/token_cas.lua")
    used = _seed(r, keys, cipher)
    newer = Portal(member_id="m1", domain="p.example", token_gen=used.token_gen)
    newer.seal_tokens(cipher, "access-2", "refresh-2", 3000)
    args = ["access_token", newer.access_token, "refresh_token", newer.refresh_token]
    index = keys.token_issued
    cas_keys = [keys.portal("m1"), keys.portals_version, index, keys.reauth_portals]
    r.sadd(keys.reauth_portals, "m1")
    gen = cas(
        keys=cas_keys,
        args=[used.refresh_token, "1", "m1", 1234, *args],
    )
    assert int(gen) == used.token_gen + 1
    assert r.zscore(index, "m1") == 1234  # the keep-alive index moves with the pair
    assert not r.sismember(keys.reauth_portals, "m1")
    # A second process that refreshed with the same (now dead) token must not overwrite it.
    late = Portal(member_id="m1", domain="p.example")
    late.seal_tokens(cipher, "access-3", "refresh-3", 4000)
    lost = cas(
        keys=cas_keys,
        args=[used.refresh_token, "1", "m1", 5678, "refresh_token", late.refresh_token],
    )
    assert int(lost) == -1
    assert r.zscore(index, "m1") == 1234
    stored = Portal.from_hash(cast("dict[bytes, bytes]", r.hgetall(keys.portal("m1"))))
    assert stored.open_refresh(cipher) == "refresh-2"
    assert stored.token_gen == used.token_gen + 1
    assert int(r.get(keys.portals_version) or 0) == 1


def test_lock_release_leaves_a_lease_taken_over(r: redis.Redis, keys: Keys) -> None:
    release = lua.script(r, "workers/lua/lock_release.lua")
    lock = keys.refresh_lock("m1")
    r.set(lock, "holder-b", px=10_000)
    assert release(keys=[lock], args=["holder-a"]) == 0
    assert r.get(lock) == b"holder-b"
    assert release(keys=[lock], args=["holder-b"]) == 1
    assert r.get(lock) is None
