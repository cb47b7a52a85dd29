"""Settings, crypto, keys, masking: the pieces every other module stands on."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from shared.crypto import DecryptError, TokenCipher, digest, generate_key, same_digest
from shared.errors import ConfigurationError
from shared.events import entity_of, fingerprint
from shared.logs import mask, scrub
from shared.redisconn import durability_problems
from shared.settings import load_settings


def test_settings_read_contract_names(settings) -> None:
    assert settings.namespace.startswith("t")
    assert settings.allow_http is True
    assert settings.allowed_hosts == ["127.0.0.1", "localhost"]
    assert len(settings.token_keys) == 1 and len(settings.token_keys[0]) == 32


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("B24PIPE_TOKEN_KEYS", "not-base64!", "B24PIPE_TOKEN_KEYS"),
        ("B24PIPE_TOKEN_KEYS", base64.b64encode(b"short").decode(), "32 bytes"),
        ("B24PIPE_NAMESPACE", "bad name with spaces", "B24PIPE_NAMESPACE"),
        ("B24_OAUTH_URL", "ftp://x", "B24_OAUTH_URL"),
        ("B24PIPE_MAX_BODY_BYTES", "-5", "B24PIPE_MAX_BODY_BYTES"),
    ],
)
def test_invalid_setting_is_one_line_naming_it(monkeypatch, tmp_path, name, value, needle) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_bad_setting_exits_2_without_traceback(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "B24PIPE_TOKEN_KEYS": "@@@"}
    done = subprocess.run(
        [sys.executable, "-m", "b24pipe", "status"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "B24PIPE_TOKEN_KEYS" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_cli_unknown_command_exits_2(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "b24pipe", "nonsense"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def test_cipher_round_trip_and_rotation() -> None:
    old, new = base64.b64decode(generate_key()), base64.b64decode(generate_key())
    sealed = TokenCipher([old]).encrypt("secret-access-token", "m1:access_token")
    assert "secret" not in sealed
    rotated = TokenCipher([new, old])
    assert rotated.decrypt(sealed, "m1:access_token") == "secret-access-token"
    assert rotated.key_of(rotated.encrypt("x", "c")) != rotated.key_of(sealed)
    with pytest.raises(DecryptError):
        rotated.decrypt(sealed, "m2:access_token")  # bound to its place
    with pytest.raises(DecryptError):
        TokenCipher([new]).decrypt(sealed, "m1:access_token")  # old key dropped


@given(st.text(max_size=200))
def test_decrypt_rejects_garbage_with_its_own_error(blob: str) -> None:
    cipher = TokenCipher([b"k" * 32])
    with pytest.raises(DecryptError):
        cipher.decrypt(blob, "ctx")


def test_digest_compare() -> None:
    assert same_digest(digest("abc"), digest("abc"))
    assert not same_digest(digest("abc"), digest("abd"))


def test_mask_and_scrub_hide_secrets() -> None:
    token = "4f1c0a77e3b2c9d8a1f0e2d3c4b5a6978877665544"
    assert token not in mask(token)
    text = f"POST https://x/oauth/token/?refresh_token={token}&client_secret=abc failed with {token}"
    cleaned = scrub(text)
    assert token not in cleaned and "abc&" not in cleaned


def test_entity_of() -> None:
    assert entity_of("ONCRMDEALUPDATE", {"FIELDS": {"ID": "759"}}) == ("deal", "759")
    assert entity_of("ONTASKUPDATE", {"FIELDS_AFTER": {"ID": 5}, "FIELDS_BEFORE": {"ID": 5}}) == ("task", "5")
    assert entity_of("ONCRMDYNAMICITEMUPDATE", {"FIELDS": {"ID": "3", "ENTITY_TYPE_ID": "128"}}) == (
        "dynamic_128",
        "3",
    )
    assert entity_of("ONCRMDYNAMICITEMUPDATE", {"FIELDS": {"ID": "3"}}) == (None, None)
    assert entity_of("ONCRMDEALUPDATE", {"FIELDS": {"ID": ["1"]}}) == (None, None)
    assert entity_of("ONIMBOTMESSAGEADD", {"FIELDS": {"ID": "1"}}) == (None, None)


def test_fingerprint_depends_on_every_part() -> None:
    base = fingerprint("m", "E", "1", 10, {"a": 1}, 5)
    assert base == fingerprint("m", "E", "1", 10, {"a": 1}, 5)
    assert len({base, fingerprint("n", "E", "1", 10, {"a": 1}, 5), fingerprint("m", "F", "1", 10, {"a": 1}, 5),
                fingerprint("m", "E", "2", 10, {"a": 1}, 5), fingerprint("m", "E", "1", 11, {"a": 1}, 5),
                fingerprint("m", "E", "1", 10, {"a": 2}, 5), fingerprint("m", "E", "1", 10, {"a": 1}, 6),
                fingerprint("m", "E", "1", 10, {"a": 1}, None)}) == 8  # fmt: skip


def test_test_server_is_durable(redis_url, r: redis.Redis) -> None:
    config = {**r.config_get("appendonly"), **r.config_get("appendfsync"), **r.config_get("maxmemory-policy")}
    problems = durability_problems(config)
    # the suite kills and restarts processes and counts on acked jobs surviving: a REDIS_URL
    # server must be as durable as the one the suite starts itself
    assert problems == [], f"the test Redis server is not durable: {problems}"
    assert durability_problems(
        {"appendonly": "no", "appendfsync": "no", "maxmemory-policy": "allkeys-lru"}
    ) == [
        "appendonly is not yes",
        "appendfsync is neither everysec nor always",
        "maxmemory-policy is not noeviction",
    ]
