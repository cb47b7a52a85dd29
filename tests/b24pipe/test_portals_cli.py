"""`b24pipe portals` as a real process against a real Redis: secrets from stdin or a
file only, never echoed; exit statuses 0 / 1 / 2 with one line and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from shared import portalstore as store
from shared.crypto import digest
from shared.keys import Keys
from shared.portals import Status

SECRETS = {
    "application_token": "apptoken0123456789abcdef01234567",
    "access_token": "access0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab",
    "refresh_token": "refresh0123456789abcdef0123456789abcdef0123456789abcdef012345678",
    "expires": 1736409407,
    "webhook_url": "https://a.example.com/rest/1/webhooksecret0123456789/",
    "webhook_token": ["outgoinghook0123456789abcdef0123"],
}


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "b24pipe", "portals", *args],
        input=stdin,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )


def add(
    env: dict[str, str], member: str = "m1", secrets: dict[str, object] | None = None
) -> subprocess.CompletedProcess[str]:
    payload = json.dumps(SECRETS if secrets is None else secrets)
    return cli(
        env, "add", "--member-id", member, "--domain", "a.example.com", "--secrets-file", "-", stdin=payload
    )


def _no_secret_in(text: str) -> None:
    for key in ("application_token", "access_token", "refresh_token", "webhook_url"):
        assert str(SECRETS[key]) not in text
    assert "webhooksecret" not in text and "outgoinghook" not in text


def test_add_show_list_revoke_purge(
    base_env: dict[str, str], r: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    done = add(base_env)
    assert done.returncode == 0, done.stderr
    assert "added" in done.stdout
    portal = store.run(r, store.load_portal(keys, "m1"))
    assert portal is not None and portal.status is Status.ACTIVE
    assert portal.client_endpoint == "https://a.example.com/rest/"
    tokens = store.run(r, store.load_tokens(keys, "m1"))
    assert tokens[digest(str(SECRETS["application_token"]))].kind == "app"
    assert tokens[digest("outgoinghook0123456789abcdef0123")].kind == "webhook"
    everything = " ".join(
        f"{k!r} {r.hgetall(k)!r}" if r.type(k) == b"hash" else repr(k) for k in r.scan_iter(f"{keys.ns}*")
    )
    _no_secret_in(everything)

    shown = cli(base_env, "show", "m1")
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["access_token"] is True and record["webhook_url"] is True
    assert record["user_id"] == 1  # the webhook's user: the app's writes are echoed as that user
    assert {row["kind"] for row in record["accepted_tokens"]} == {"app", "webhook"}
    _no_secret_in(shown.stdout + shown.stderr + done.stdout + done.stderr)

    listed = cli(base_env, "list", "--json")
    assert listed.returncode == 0
    assert [row["member_id"] for row in json.loads(listed.stdout)] == ["m1"]

    # a file works as well as stdin; a second add with a new app token replaces it at once
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"application_token": "second0123456789abcdef0123456789"}))
    again = cli(
        base_env, "add", "--member-id", "m1", "--domain", "a.example.com", "--secrets-file", str(path),
        "--auth-connector", "b24pipe-app",
    )  # fmt: skip
    assert again.returncode == 0 and "updated" in again.stdout
    portal = store.run(r, store.load_portal(keys, "m1"))
    assert portal is not None and portal.auth_connector == "b24pipe-app"
    assert json.loads(cli(base_env, "show", "m1").stdout)["auth_connector"] == "b24pipe-app"
    tokens = store.run(r, store.load_tokens(keys, "m1"))
    assert digest(str(SECRETS["application_token"])) not in tokens
    assert tokens[digest("second0123456789abcdef0123456789")].kind == "app"

    version = int(r.get(keys.portals_version) or 0)
    revoked = cli(base_env, "revoke", "m1")
    assert revoked.returncode == 0, revoked.stderr
    portal = store.run(r, store.load_portal(keys, "m1"))
    assert portal is not None and portal.status is Status.REVOKED and not portal.access_token
    assert store.run(r, store.load_tokens(keys, "m1")) == {}
    assert int(r.get(keys.portals_version) or 0) > version

    purged = cli(base_env, "purge", "m1")
    assert purged.returncode == 0
    assert store.run(r, store.load_portal(keys, "m1")) is None
    assert cli(base_env, "show", "m1").returncode == 1


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        (
            ["add", "--member-id", "bad id", "--domain", "a.example.com", "--secrets-file", "-"],
            "{}",
            "member id",
        ),
        (
            ["add", "--member-id", "m1", "--domain", "a.example.com", "--secrets-file", "-"],
            "not json",
            "JSON",
        ),
        (
            ["add", "--member-id", "m1", "--domain", "a.example.com", "--secrets-file", "-"],
            "{}",
            "at least one",
        ),
        (
            ["add", "--member-id", "m1", "--domain", "a.example.com", "--secrets-file", "-"],
            '{"x": "1"}',
            "unknown key",
        ),
        (["add", "--member-id", "m1", "--domain", "a..com", "--secrets-file", "-"], "{}", "domain"),
        (
            [
                "add",
                "--member-id",
                "m1",
                "--domain",
                "a.example.com",
                "--client-endpoint",
                "https://evil.com/rest/",
                "--secrets-file",
                "-",
            ],
            '{"application_token": "abcdefgh12345678"}',
            "evil.com",
        ),
        (
            ["add", "--member-id", "m1", "--domain", "a.example.com", "--secrets-file", "/nonexistent/x"],
            "",
            "cannot read",
        ),
        (
            [
                "add",
                "--member-id",
                "m1",
                "--domain",
                "a.example.com",
                "--secrets-file",
                "-",
                "--access-token",
                "x",
            ],
            "{}",
            "unrecognized",
        ),
        (["show", "a*b"], "", "member id"),
        (
            [
                "add",
                "--member-id",
                "m1",
                "--domain",
                "a.example.com",
                "--secrets-file",
                "-",
                "--auth-connector",
                "a b",
            ],
            json.dumps({"application_token": "apptoken0123456789abcdef01234567"}),
            "--auth-connector",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    base_env: dict[str, str], r: redis.Redis, keys: Keys, args: list[str], stdin: str, expected: str
) -> None:
    done = cli(base_env, *args, stdin=stdin)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert list(r.scan_iter(f"{keys.ns}*")) == []


def test_runtime_failures_exit_1(base_env: dict[str, str], r: redis.Redis) -> None:
    unknown = cli(base_env, "revoke", "nobody")
    assert unknown.returncode == 1 and "unknown portal" in unknown.stderr
    unbound = cli(base_env, "bind", "m1")  # no B24PIPE_PUBLIC_URL: a configuration error
    assert unbound.returncode == 2 and "B24PIPE_PUBLIC_URL" in unbound.stderr
    bind = cli({**base_env, "B24PIPE_PUBLIC_URL": "https://app.example.org"}, "bind", "nobody")
    assert bind.returncode == 1 and bind.stderr.count("\n") == 1 and "Traceback" not in bind.stderr
    down = add({**base_env, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert down.returncode == 1 and down.stderr.count("\n") == 1 and "Traceback" not in down.stderr
    _no_secret_in(down.stderr)


def test_add_records_the_user_the_app_writes_as(base_env: dict[str, str], r: redis.Redis, keys: Keys) -> None:
    """Echo marks are keyed by that user: without it a portal added by hand is unguarded until
    its first refresh tells."""
    payload = json.dumps({"access_token": SECRETS["access_token"], "refresh_token": SECRETS["refresh_token"]})
    base = ("add", "--member-id", "m7", "--domain", "a.example.com", "--secrets-file", "-")
    for bad in ("0", "-3", "x1", "\u0661", "99999999999"):
        refused = cli(base_env, *base, "--user-id", bad, stdin=payload)
        assert refused.returncode == 2 and "--user-id" in refused.stderr and "Traceback" not in refused.stderr
        assert not r.exists(keys.portal("m7"))  # nothing written
    assert cli(base_env, *base, "--user-id", "7", stdin=payload).returncode == 0
    stored = store.run(r, store.load_portal(keys, "m7"))
    assert stored is not None and stored.user_id == 7
    assert cli(base_env, *base, stdin=payload).returncode == 0  # re-added without it: kept
    again = store.run(r, store.load_portal(keys, "m7"))
    assert again is not None and again.user_id == 7
