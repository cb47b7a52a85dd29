"""The portal store's transactions against a real Redis: token replacement with grace, pending
installs, the bounded quarantine, revocation and purge isolation; sync and async alike."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import replace
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from shared import portalstore as store
from shared.crypto import TokenCipher, digest, generate_key
from shared.keys import Keys
from shared.oauth import AppInfo
from shared.portals import AcceptedToken, Portal, Status, namespace_connector
from shared.settings import Settings

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
    assert store.run(r, store.save_pending(keys, pending, BOUNDS)) == 1
    assert store.run(r, store.load_tokens(keys, "m1"))[digest("tok")].kind == "app"
    assert store.run(r, store.load_pending(keys, "m1", digest("tok"))) == pending
    store.run(r, store.drop_pending(keys, "m1", digest("tok"), quarantine=True))
    assert store.run(r, store.load_tokens(keys, "m1"))[digest("tok")].kind == "app"
    assert store.run(r, store.load_pending(keys, "m1", digest("tok"))) is None


BOUNDS = store.Bounds(ttl=50, max_events=3, max_pending=3, max_bytes=1 << 20, source_bytes=1 << 19)


def _pending(member_id: str, token: str) -> store.PendingInstall:
    return store.PendingInstall(
        Portal(member_id, "a.example.com"), digest(token), None, False, int(time.time())
    )


def test_quarantine_is_bounded_and_expires(r: redis.Redis, keys: Keys) -> None:
    tok = digest("tok")
    assert store.run(r, store.quarantine_push(keys, "m1", tok, b"{}", BOUNDS)) == store.ORPHAN
    store.run(r, store.save_pending(keys, _pending("m1", "tok"), BOUNDS))
    results = [
        store.run(r, store.quarantine_push(keys, "m1", tok, b'{"n":%d}' % i, BOUNDS)) for i in range(5)
    ]
    assert results == [1, 2, 3, store.FULL, store.FULL]
    assert 0 < r.ttl(keys.quarantine("m1", tok)) <= 50
    assert 0 < r.ttl(keys.pending_install("m1", tok)) <= 50
    assert store.run(r, store.quarantine_read(keys, "m1", tok)) == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    store.run(r, store.quarantine_trim(keys, "m1", tok, 2))
    assert store.run(r, store.quarantine_read(keys, "m1", tok)) == [b'{"n":2}']


def test_pending_installs_never_replace_each_other_and_are_capped(r: redis.Redis, keys: Keys) -> None:
    real, forged = _pending("m1", "real"), _pending("m1", "forged")
    assert store.run(r, store.save_pending(keys, real, BOUNDS)) == 1
    assert store.run(r, store.save_pending(keys, forged, BOUNDS)) == 1
    assert store.run(r, store.save_pending(keys, _pending("m1", "forged"), BOUNDS)) == store.ALREADY_PENDING
    assert store.run(r, store.save_pending(keys, _pending("m2", "x"), BOUNDS)) == 1
    assert store.run(r, store.save_pending(keys, _pending("m3", "y"), BOUNDS)) == store.FULL
    for token in ("real", "forged"):
        assert store.run(r, store.quarantine_push(keys, "m1", digest(token), token.encode(), BOUNDS)) == 1
    # refuting the forged install drops only what came with the forged token
    store.run(r, store.drop_pending(keys, "m1", digest("forged"), quarantine=True))
    assert store.run(r, store.load_pending(keys, "m1", digest("real"))) == real
    assert store.run(r, store.quarantine_read(keys, "m1", digest("real"))) == [b"real"]
    assert store.run(r, store.pending_digests(keys, "m1")) == [digest("real")]
    assert store.run(r, store.load_tokens(keys, "m1")).keys() == {digest("real")}
    # revoking forgets every pending install of the member id, and frees its place
    store.run(r, store.revoke(keys, "m1", "test"))
    assert not r.exists(keys.pending_install("m1", digest("real")), keys.quarantine("m1", digest("real")))
    assert r.zcard(keys.pending_index) == 1
    assert store.run(r, store.save_pending(keys, _pending("m3", "y"), BOUNDS)) == 1


def test_quarantined_bytes_are_capped_in_all_and_per_install(r: redis.Redis, keys: Keys) -> None:
    bounds = store.Bounds(ttl=50, max_events=1000, max_pending=10, max_bytes=1000, source_bytes=600)
    for token in ("a", "b"):
        store.run(r, store.save_pending(keys, _pending("m1", token), bounds))
    push = [
        store.run(r, store.quarantine_push(keys, "m1", digest("a"), b"x" * 250, bounds)) for _ in range(3)
    ]
    assert push == [1, 2, store.OVER_BYTES]  # 750 > 600 for one install
    push = [
        store.run(r, store.quarantine_push(keys, "m1", digest("b"), b"y" * 250, bounds)) for _ in range(3)
    ]
    assert push == [1, 2, store.OVER_BYTES]  # 1250 > 1000 in all at the third
    assert r.hget(keys.quarantine_bytes, f"m1:{digest('b')}") == b"500"


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
        r.hset(keys.offline_batches(member), "pid", b"{}")
        r.hset(keys.offline_state(member), "extended", 1)
        r.zadd(keys.offline_due, {member: 1})
        r.hset(keys.offline_backlog, member, 3)
        r.hset(keys.probe(member), "result", "missing")
        r.hset(keys.bind_state(member), "outcome", "failed")
        r.sadd(keys.bindings_missing, member)
        r.hset(keys.last_event, member, 1.0)
    store.purge_sync(r, keys, "5")
    assert not r.exists(keys.offline_batches("5"), keys.offline_state("5"))
    assert r.zscore(keys.offline_due, "5") is None and r.hget(keys.offline_backlog, "5") is None
    assert r.exists(keys.offline_batches("other")) and r.zscore(keys.offline_due, "other") == 1
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


def test_a_portal_without_a_connector_is_given_one_and_one_it_has_is_kept(r: redis.Redis, keys: Keys) -> None:
    assert store.run(r, store.give_connector(keys, "nobody", "b24pipe-x")) == ""
    assert not r.exists(keys.portal("nobody"))  # no record is created
    r.hset(keys.portal("m1"), "domain", "p1.bitrix24.test")
    assert store.run(r, store.give_connector(keys, "m1", "b24pipe-x")) == "b24pipe-x"
    assert store.run(r, store.give_connector(keys, "m1", "b24pipe-y")) == "b24pipe-x"
    r.hset(keys.portal("m2"), mapping={"domain": "p2.bitrix24.test", "auth_connector": ""})
    assert store.run(r, store.give_connector(keys, "m2", "b24pipe-y")) == "b24pipe-y"
    assert r.hget(keys.portal("m2"), "auth_connector") == b"b24pipe-y"


def test_async_runner_gives_the_same_results(redis_url: str, r: redis.Redis, keys: Keys) -> None:
    async def scenario() -> tuple[bool, dict[str, AcceptedToken], bool]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            changed = await store.arun(client, store.set_app_token(keys, "m2", digest("x"), 0))
            tokens = await store.arun(client, store.load_tokens(keys, "m2"))
            await store.arun(client, store.save_pending(keys, _pending("m2", "x"), BOUNDS))
            tx = store.quarantine_push(keys, "m2", digest("x"), orjson.dumps({"a": 1}), BOUNDS)
            held = await store.arun(client, tx) == 1
            return changed, tokens, held
        finally:
            await client.aclose()

    changed, tokens, held = asyncio.run(scenario())
    assert changed and tokens == {digest("x"): AcceptedToken("app")} and held
    assert r.lrange(keys.quarantine("m2", digest("x")), 0, -1) == [b'{"a":1}']


def test_an_install_gives_the_namespace_connector_to_a_portal_without_one() -> None:
    tokens = store.Tokens("a", "b", 1, "t")
    fresh = store.verified_portal(None, _info(), tokens, CIPHER, "https://o", "b24pipe-0123456789abcdef")
    assert fresh.auth_connector == "b24pipe-0123456789abcdef"
    own = store.verified_portal(
        replace(fresh, auth_connector="mine"), _info(), tokens, CIPHER, "https://o", "x"
    )
    assert own.auth_connector == "mine"  # a connector the record has is kept


def test_the_namespace_connector_exists_only_with_offline_events(settings: Settings) -> None:
    assert namespace_connector(settings) == ""
    offline = settings.model_copy(update={"offline_events": ["ONCRMDEALUPDATE"]})
    connector = namespace_connector(offline)
    assert connector.startswith("b24pipe-") and len(connector) == 24
    assert connector == namespace_connector(offline)  # every process derives the same one
    other = offline.model_copy(update={"namespace": "another-app"})
    assert namespace_connector(other) != connector
