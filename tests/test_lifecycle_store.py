"""The portal store's plans against a real Redis: token replacement with grace, pending
installs, the bounded quarantine, revocation and purge isolation; sync and async alike."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from shared import portalstore as store
from shared.crypto import TokenCipher, digest, generate_key
from shared.keys import Keys
from shared.oauth import AppInfo
from shared.portals import AcceptedToken, Portal, Status

CIPHER = TokenCipher([base64.b64decode(generate_key())])


def _info(member_id: str = "m1") -> AppInfo:
    return AppInfo(
        client_id="app.test.client",
        scope="crm",
        user_id=1,
        installed=True,
        version="3",
        domain="a.example.com",
        member_id=member_id,
        client_endpoint="https://a.example.com/rest/",
        status="L",
    )


def _version(r: redis.Redis, keys: Keys) -> int:
    return int(r.get(keys.portals_version) or 0)


def test_verified_install_stores_sealed_tokens_and_digest_only(r: redis.Redis, keys: Keys) -> None:
    tokens = store.Tokens("access-secret-1", "refresh-secret-1", 123, "apptoken-secret-1")
    portal = store.verified_portal(None, _info(), tokens, CIPHER, "https://oauth.example")
    changed = store.run(r, store.commit_verified(keys, portal, digest(tokens.application_token), 0, None))
    assert changed is True
    raw: dict[Any, Any] = {**r.hgetall(keys.portal("m1")), **r.hgetall(keys.app_tokens("m1"))}
    blob = b" ".join([*raw.keys(), *raw.values()])
    for secret in (b"access-secret-1", b"refresh-secret-1", b"apptoken-secret-1"):
        assert secret not in blob
    stored = store.run(r, store.load_portal(keys, "m1"))
    assert stored is not None and stored.open_access(CIPHER) == "access-secret-1"
    assert stored.client_endpoint == "https://a.example.com/rest/" and stored.status is Status.ACTIVE
    assert store.run(r, store.load_tokens(keys, "m1")) == {digest("apptoken-secret-1"): AcceptedToken("app")}
    assert _version(r, keys) >= 1


def test_token_change_keeps_previous_for_grace_and_webhooks_stay(r: redis.Redis, keys: Keys) -> None:
    store.run(r, store.set_app_token(keys, "m1", digest("old"), 0))
    store.run(r, store.add_token(keys, "m1", digest("hook"), AcceptedToken("webhook")))
    before = _version(r, keys)
    until = int(time.time()) + 600
    assert store.run(r, store.set_app_token(keys, "m1", digest("new"), until)) is True
    tokens = store.run(r, store.load_tokens(keys, "m1"))
    assert tokens[digest("new")].kind == "app"
    assert tokens[digest("old")] == AcceptedToken("grace", until)
    assert tokens[digest("hook")].kind == "webhook"
    assert _version(r, keys) > before
    # same token again: no change reported
    assert store.run(r, store.set_app_token(keys, "m1", digest("new"), until)) is False
    # a re-install (no grace) drops the previous app token at once; expired grace goes too
    store.run(r, store.set_app_token(keys, "m1", digest("third"), 0))
    tokens = store.run(r, store.load_tokens(keys, "m1"))
    assert digest("new") not in tokens and tokens[digest("third")].kind == "app"


def test_pending_token_never_overwrites_an_accepted_one_and_late_refutation_spares_verified(
    r: redis.Redis, keys: Keys
) -> None:
    store.run(r, store.set_app_token(keys, "m1", digest("tok"), 0))
    pending = store.PendingInstall(Portal("m1", "a.example.com"), digest("tok"), "4", True, int(time.time()))
    store.run(r, store.save_pending(keys, pending))
    assert store.run(r, store.load_tokens(keys, "m1"))[digest("tok")].kind == "app"
    assert store.run(r, store.load_pending(keys, "m1")) == pending
    store.run(r, store.drop_pending(keys, "m1", digest("tok"), quarantine=True))
    assert store.run(r, store.load_tokens(keys, "m1"))[digest("tok")].kind == "app"
    assert store.run(r, store.load_pending(keys, "m1")) is None


def test_quarantine_is_bounded_and_expires(r: redis.Redis, keys: Keys) -> None:
    results = [store.run(r, store.quarantine_push(keys, "m1", b'{"n":%d}' % i, 3, 50)) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert 0 < r.ttl(keys.quarantine("m1")) <= 50
    assert store.run(r, store.quarantine_read(keys, "m1")) == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    store.run(r, store.quarantine_trim(keys, "m1", 2))
    assert store.run(r, store.quarantine_read(keys, "m1")) == [b'{"n":2}']


def test_revoke_drops_secrets_and_tokens(r: redis.Redis, keys: Keys) -> None:
    portal = store.verified_portal(None, _info(), store.Tokens("a", "b", 1, "t"), CIPHER, "https://o")
    store.run(r, store.commit_verified(keys, portal, digest("t"), 0, None))
    before = _version(r, keys)
    store.run(r, store.revoke(keys, "m1", "test"))
    revoked = store.run(r, store.load_portal(keys, "m1"))
    assert revoked is not None and revoked.status is Status.REVOKED
    assert not revoked.access_token and not revoked.refresh_token
    assert store.run(r, store.load_tokens(keys, "m1")) == {}
    assert _version(r, keys) > before


def test_purge_deletes_only_that_portal(r: redis.Redis, keys: Keys) -> None:
    for member in ("5", "other"):
        portal = store.verified_portal(
            None, _info(member), store.Tokens("a", "b", 1, "t"), CIPHER, "https://o"
        )
        store.run(r, store.commit_verified(keys, portal, digest("t" + member), 0, None))
        r.set(keys.chain(member, "deal:5"), 1)
        r.set(keys.coalesce_group(member, "h", "ONCRMDEALUPDATE:deal:5"), 1)
        r.set(keys.coalesce_claim(member, "h", "job1"), 1)
        r.set(keys.operating(member, "crm.deal.get"), 1)
        r.hset(keys.probe(member), "result", "missing")
        r.hset(keys.bind_state(member), "outcome", "failed")
        r.sadd(keys.bindings_missing, member)
        r.hset(keys.last_event, member, 1.0)
    store.purge_sync(r, keys, "5")
    assert store.run(r, store.load_portal(keys, "5")) is None
    assert not r.exists(
        keys.chain("5", "deal:5"),
        keys.coalesce_group("5", "h", "ONCRMDEALUPDATE:deal:5"),
        keys.coalesce_claim("5", "h", "job1"),
        keys.probe("5"),
        keys.bind_state("5"),
    )
    assert r.smembers(keys.bindings_missing) == {b"other"} and r.hkeys(keys.last_event) == [b"other"]
    assert store.run(r, store.load_portal(keys, "other")) is not None
    group = keys.coalesce_group("other", "h", "ONCRMDEALUPDATE:deal:5")
    assert r.exists(keys.chain("other", "deal:5"), group, keys.coalesce_claim("other", "h", "job1")) == 3
    assert store.run(r, store.list_members(keys)) == ["other"]


def test_async_runner_gives_the_same_results(redis_url: str, r: redis.Redis, keys: Keys) -> None:
    async def scenario() -> tuple[bool, dict[str, AcceptedToken], bool]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            changed = await store.arun(client, store.set_app_token(keys, "m2", digest("x"), 0))
            tokens = await store.arun(client, store.load_tokens(keys, "m2"))
            held = await store.arun(client, store.quarantine_push(keys, "m2", orjson.dumps({"a": 1}), 1, 5))
            return changed, tokens, held
        finally:
            await client.aclose()

    changed, tokens, held = asyncio.run(scenario())
    assert changed and tokens == {digest("x"): AcceptedToken("app")} and held
    assert r.lrange(keys.quarantine("m2"), 0, -1) == [b'{"a":1}']
