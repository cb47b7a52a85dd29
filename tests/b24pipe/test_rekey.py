"""Token-key rotation, rehearsed: add the new key first, `b24pipe portals rekey`, drop the old
key. Every secret must then open with the new key alone, be the same secret as before, and
a record under a running refresh must be left alone (its save compares ciphertexts)."""

from __future__ import annotations

import base64
import json

import redis

from b24pipe.rekey import SEALED_FIELDS
from shared import portalstore as store
from shared.crypto import TokenCipher, generate_key
from shared.keys import Keys
from shared.portals import Portal
from tests.b24pipe.test_portals_cli import SECRETS, add, cli


def _key(text: str) -> bytes:
    return base64.b64decode(text)


def _sealed(r: redis.Redis, keys: Keys, member_id: str) -> dict[str, str]:
    portal = Portal.from_hash(r.hgetall(keys.portal(member_id)))
    return {name: str(getattr(portal, name)) for name in SEALED_FIELDS}


def _opened(r: redis.Redis, keys: Keys, member_id: str, cipher: TokenCipher) -> dict[str, str]:
    portal = Portal.from_hash(r.hgetall(keys.portal(member_id)))
    return {
        "access_token": portal.open_access(cipher),
        "refresh_token": portal.open_refresh(cipher),
        "webhook_url": portal.open_webhook(cipher),
    }


def test_rotation_reseals_every_secret_under_the_new_key(
    base_env: dict[str, str], r: redis.Redis, keys: Keys, token_key: str
) -> None:
    assert add(base_env, "m1").returncode == 0
    assert add(base_env, "m2").returncode == 0
    old = TokenCipher([_key(token_key)])
    before = {member: _opened(r, keys, member, old) for member in ("m1", "m2")}
    assert before["m1"]["refresh_token"] == SECRETS["refresh_token"]

    new_key = generate_key()
    rotated = {**base_env, "B24PIPE_TOKEN_KEYS": f"{new_key},{token_key}"}
    done = cli(rotated, "rekey", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["resealed"], report["current"], report["busy"], report["unreadable"]) == (2, 0, [], [])
    assert token_key not in done.stdout + done.stderr and new_key not in done.stdout + done.stderr

    new_only = TokenCipher([_key(new_key)])
    for member in ("m1", "m2"):
        assert _opened(r, keys, member, new_only) == before[member]  # same secrets, new key only
    again = json.loads(cli(rotated, "rekey", "--json").stdout)
    assert (again["resealed"], again["current"]) == (0, 2)  # idempotent


def test_a_record_under_refresh_or_with_an_unknown_key_is_left_alone(
    base_env: dict[str, str], r: redis.Redis, keys: Keys, token_key: str
) -> None:
    assert add(base_env, "m1").returncode == 0
    sealed = _sealed(r, keys, "m1")
    rotated = {**base_env, "B24PIPE_TOKEN_KEYS": f"{generate_key()},{token_key}"}

    r.set(keys.refresh_lock("m1"), "another-process", px=60_000)
    busy = cli(rotated, "rekey")
    assert busy.returncode == 1 and "run rekey again: m1" in busy.stderr
    assert _sealed(r, keys, "m1") == sealed

    r.delete(keys.refresh_lock("m1"))
    unknown = cli({**base_env, "B24PIPE_TOKEN_KEYS": generate_key()}, "rekey")
    assert unknown.returncode == 1 and "no longer configured" in unknown.stderr and "m1" in unknown.stderr
    assert _sealed(r, keys, "m1") == sealed


def test_the_script_writes_nothing_when_a_ciphertext_moved_on(r: redis.Redis, keys: Keys) -> None:
    r.hset(keys.portal("m1"), mapping={"access_token": "v1:a:now", "refresh_token": "v1:a:r"})
    stale = [("access_token", "v1:a:before", "v1:b:x"), ("refresh_token", "v1:a:r", "v1:b:y")]
    assert store.run(r, store.write_resealed(keys, "m1", keys.portal("m1"), stale)) == 0
    assert r.hmget(keys.portal("m1"), "access_token", "refresh_token") == [b"v1:a:now", b"v1:a:r"]
    fresh = [("access_token", "v1:a:now", "v1:b:x"), ("refresh_token", "v1:a:r", "v1:b:y")]
    r.set(keys.refresh_lock("m1"), "someone")
    assert store.run(r, store.write_resealed(keys, "m1", keys.portal("m1"), fresh)) == -1
    r.delete(keys.refresh_lock("m1"))
    assert store.run(r, store.write_resealed(keys, "m1", keys.portal("m1"), fresh)) == 1
    assert r.hmget(keys.portal("m1"), "access_token", "refresh_token") == [b"v1:b:x", b"v1:b:y"]
