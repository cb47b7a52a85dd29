"""`REDIS_URL` (plain and Sentinel), `B24PIPE_ACK` plans and `/readyz` verdicts: the pure
decisions, and the start-up refusal of a malformed URL by every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.ackmode import plan
from shared.errors import ConfigurationError
from shared.redisconn import ServerFacts, readiness, redacted
from shared.redisurl import SentinelTarget, parse_redis_url
from shared.settings import load_settings

GOOD_CONFIG = {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}


def test_plain_urls_are_left_to_redis_py() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://u:p@h:6380/2", "unix:///run/redis.sock", "redis://h"):
        assert parse_redis_url(url) is None


def test_a_sentinel_url_names_sentinels_master_db_and_credentials() -> None:
    target = parse_redis_url("redis+sentinel://app:s%40cret@s1:26379,s2:26380,s3/mymaster/3")
    assert target == SentinelTarget(
        sentinels=(("s1", 26379), ("s2", 26380), ("s3", 26379)),
        master="mymaster",
        db=3,
        username="app",
        password="s@cret",
        tls=False,
    )
    assert parse_redis_url("rediss+sentinel://s1:1/m") == SentinelTarget(
        (("s1", 1),), "m", 0, None, None, True
    )


def test_rq_gets_the_same_sentinel_as_a_config_dict() -> None:
    target = parse_redis_url("redis+sentinel://:pw@s1:26379,s2:26380/mymaster/2")
    assert target is not None
    assert target.rq_config() == {
        "INSTANCES": [["s1", 26379], ["s2", 26380]],
        "MASTER_NAME": "mymaster",
        "DB": 2,
        "SOCKET_TIMEOUT": 5,
        "SSL": False,
        "PASSWORD": "pw",
    }


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("localhost:6379", "must look like"),
        ("http://h:1/0", "unknown scheme http://"),
        ("redis://h:99999/0", "invalid port"),
        ("redis:///0", "no host"),
        ("redis://h:1/zero", "database must be a number"),
        ("redis+sentinel://s1:26379", "primary's name"),
        ("redis+sentinel://s1:26379/m/x", "database must be a number"),
        ("redis+sentinel://s1:port/m", "invalid port"),
        ("redis+sentinel://:26379/m", "no host"),
    ],
)
def test_malformed_urls_are_refused_with_the_reason(
    url: str, problem: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(ConfigurationError, match="REDIS_URL") as raised:
        load_settings()
    assert problem in str(raised.value)


@pytest.mark.parametrize("command", [["status"], ["worker"], ["ingress"], ["failed", "list"], ["run"]])
def test_every_command_refuses_a_malformed_url_at_start_with_one_line_and_exit_2(
    command: list[str], tmp_path: Path
) -> None:
    env = {**os.environ, "REDIS_URL": "redis+sentinel://u:topsecret@s1:26379"}
    done = subprocess.run(
        [sys.executable, "-m", "b24pipe", *command], env=env, cwd=tmp_path, capture_output=True, timeout=60
    )
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "REDIS_URL" in lines[0], lines
    assert "topsecret" not in lines[0]


def test_redacted_hides_a_sentinel_password() -> None:
    assert redacted("redis+sentinel://u:pw@s1:1,s2:2/m") == "redis+sentinel://u:***@s1:1,s2:2/m"


def test_ack_mode_is_validated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("B24PIPE_ACK", "eventually")
    with pytest.raises(ConfigurationError, match="B24PIPE_ACK: must be one of written, fsync, replica"):
        load_settings()


def test_ack_plans_one_wait_per_batch_from_what_the_server_offers() -> None:
    assert plan("written", GOOD_CONFIG, False).command(100) is None
    assert plan("replica", None, False).command(250) == ["WAIT", 1, 250]
    assert plan("replica", None, False).command(0) == ["WAIT", 1, 1]  # WAIT 1 0 would wait forever
    always = {**GOOD_CONFIG, "appendfsync": "always"}
    assert plan("fsync", always, False).command(100) is None  # the reply already means fsynced
    assert plan("fsync", GOOD_CONFIG, True).command(100) == ["WAITAOF", 1, 0, 100]
    assert plan("fsync", None, True).verb == "WAITAOF"
    refused = plan("fsync", GOOD_CONFIG, False)
    assert refused.problem and "appendfsync always" in refused.problem


def test_ack_replies_confirm_only_what_the_mode_needs() -> None:
    wait, waitaof = plan("replica", None, False), plan("fsync", None, True)
    assert wait.confirmed(1) and wait.confirmed(2) and not wait.confirmed(0)
    assert waitaof.confirmed([1, 0]) and not waitaof.confirmed([0, 0])


def test_readiness_of_managed_redis_is_unknown_not_a_failure_unless_strict() -> None:
    managed = ServerFacts(config=None, has_waitaof=True)
    relaxed = readiness(managed, "written", strict=False)
    assert (relaxed.problems, relaxed.durability) == ([], "unknown")
    strict = readiness(managed, "written", strict=True)
    assert strict.durability == "unknown" and "B24PIPE_DURABILITY_STRICT" in strict.problems[0]
    verified = readiness(ServerFacts(GOOD_CONFIG, False), "written", strict=True)
    assert (verified.problems, verified.durability) == ([], "verified")
    evicting = readiness(
        ServerFacts({**GOOD_CONFIG, "maxmemory-policy": "allkeys-lru"}, False), "written", False
    )
    assert evicting.problems == ["maxmemory-policy is not noeviction"]
    no_fsync = readiness(ServerFacts(GOOD_CONFIG, False), "fsync", False)
    assert no_fsync.problems and "appendfsync always" in no_fsync.problems[0]
