"""The token store's writes against a real Redis, all through `shared.portalstore`:
compare-and-set on the refresh token used, the re-authorization mark, and the one refresh
lock whose sync and async faces exclude each other and never free someone else's lease.
Then the refresh itself against the simulator: missing client credentials fail for good."""

from __future__ import annotations

import asyncio
import base64
from typing import cast

import pytest
import redis
import redis.asyncio as aioredis

from b24pipe.sim.client import SimClient
from shared import portalstore as store
from shared.crypto import TokenCipher
from shared.keys import Keys
from shared.oauth import Refreshed
from shared.portals import Portal, Status
from shared.settings import Settings, load_settings
from tests.support.clientkit import install
from workers.errors import ConfigurationError
from workers.rest.client import client_for
from workers.runner.outcome import Action, Policy, classify


def _cipher(token_key: str) -> TokenCipher:
    return TokenCipher([base64.b64decode(token_key)])


def _seed(r: redis.Redis, keys: Keys, cipher: TokenCipher) -> Portal:
    portal = Portal(member_id="m1", domain="p.example")
    portal.seal_tokens(cipher, "access-1", "refresh-1", 2000)
    r.hset(keys.portal("m1"), mapping=portal.to_hash())
    return portal


def _stored(r: redis.Redis, keys: Keys) -> Portal:
    return Portal.from_hash(cast("dict[bytes, bytes]", r.hgetall(keys.portal("m1"))))


def test_a_refreshed_pair_is_saved_only_over_the_refresh_token_used(
    r: redis.Redis, keys: Keys, token_key: str
) -> None:
    cipher = _cipher(token_key)
    used = _seed(r, keys, cipher)
    r.sadd(keys.reauth_portals, "m1")
    answer = Refreshed(
        "access-2", "refresh-2", issued_at=1234, expires=1234 + 60, member_id="m1", user_id=7,
        client_endpoint="https://moved.example/rest/",
    )  # fmt: skip
    gen = store.run(r, store.save_refreshed(keys, used, answer, cipher))
    assert gen == used.token_gen + 1
    assert r.zscore(keys.token_issued, "m1") == 1234  # the keep-alive index moves with the pair
    assert not r.sismember(keys.reauth_portals, "m1")
    saved = _stored(r, keys)
    assert (saved.open_access(cipher), saved.open_refresh(cipher)) == ("access-2", "refresh-2")
    assert (saved.expires, saved.updated_at) == (1294, 1234)
    assert (saved.user_id, saved.client_endpoint) == (7, "https://moved.example/rest/")
    # A second process that refreshed with the same (now dead) token must not overwrite it.
    late = Refreshed("access-3", "refresh-3", issued_at=5678, expires=9000)
    assert store.run(r, store.save_refreshed(keys, used, late, cipher)) == store.NOT_SAVED
    assert r.zscore(keys.token_issued, "m1") == 1234
    assert _stored(r, keys).open_refresh(cipher) == "refresh-2"
    assert _stored(r, keys).token_gen == used.token_gen + 1
    assert int(r.get(keys.portals_version) or 0) == 1


def test_an_answer_naming_another_portal_changes_only_the_pair(
    r: redis.Redis, keys: Keys, token_key: str
) -> None:
    cipher = _cipher(token_key)
    used = _seed(r, keys, cipher)
    answer = Refreshed(
        "access-2", "refresh-2", issued_at=1, expires=61, member_id="other", user_id=9,
        client_endpoint="https://elsewhere.example/rest/",
    )  # fmt: skip
    assert store.run(r, store.save_refreshed(keys, used, answer, cipher)) == used.token_gen + 1
    saved = _stored(r, keys)
    assert (saved.user_id, saved.client_endpoint) == (0, "")
    assert saved.open_refresh(cipher) == "refresh-2"


def test_reauth_is_marked_only_while_the_refused_token_is_stored(
    r: redis.Redis, keys: Keys, token_key: str
) -> None:
    cipher = _cipher(token_key)
    used = _seed(r, keys, cipher)
    r.zadd(keys.token_issued, {"m1": 1})
    newer = Refreshed("access-2", "refresh-2", issued_at=5, expires=65)
    store.run(r, store.save_refreshed(keys, used, newer, cipher))
    assert store.run(r, store.mark_reauth(keys, used, "refused")) == store.NOT_SAVED  # a newer pair won
    assert _stored(r, keys).status is Status.ACTIVE
    current = _stored(r, keys)
    assert store.run(r, store.mark_reauth(keys, current, "refused")) == current.token_gen
    assert (_stored(r, keys).status, _stored(r, keys).reason) == (Status.REAUTH, "refused")
    assert r.sismember(keys.reauth_portals, "m1")
    assert r.zscore(keys.token_issued, "m1") is None


def test_the_refresh_lock_is_one_lock_for_sync_and_async(r: redis.Redis, keys: Keys, redis_url: str) -> None:
    sync_side = store.RefreshLock.of(keys, "m1", 10)
    async_side = store.RefreshLock.of(keys, "m1", 10)

    async def take_async() -> bool:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await store.arun(client, store.take_lock(async_side))
        finally:
            await client.aclose()

    assert store.run(r, store.take_lock(sync_side))
    assert not asyncio.run(take_async())  # the uninstall check holds it: no refresh starts
    assert 0 < int(r.pttl(keys.refresh_lock("m1"))) <= 10_000
    assert not store.run(r, store.release_lock(async_side))  # not its lease: left alone
    assert r.get(keys.refresh_lock("m1")) == sync_side.holder.encode()
    assert store.run(r, store.release_lock(sync_side))
    assert asyncio.run(take_async())


def test_refresh_lease_outlives_the_requests_made_under_it(settings: Settings) -> None:
    assert store.refresh_lease(settings) == settings.http_timeout * 2 + 5
    assert store.refresh_lease(settings, requests=2) == settings.http_timeout * 3 + 5


def test_missing_client_credentials_fail_for_good(
    simulator: SimClient, r: redis.Redis, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pair, member = install(simulator, r, env)
    simulator.expire_tokens(member)
    monkeypatch.delenv("B24_CLIENT_SECRET")
    b24 = client_for(load_settings(), None, member)
    with pytest.raises(ConfigurationError) as caught:
        b24.call("profile")
    assert caught.value.code == "NO_CLIENT_CREDENTIALS"
    assert classify(caught.value, 1, Policy(), 0.5).action is Action.FAIL
    assert simulator.stats(member)["refreshes"] == 0  # nothing was asked for
    assert simulator.refresh(pair.refresh_token).status == 200  # the pair is still good
    assert not r.exists(Keys(env["B24PIPE_NAMESPACE"]).refresh_lock(member))  # released
