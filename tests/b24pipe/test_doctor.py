"""`b24pipe portals doctor M` names the exact problem of each simulated failure, with its
fix, and exits 0 only when the portal is healthy; `portals show` carries the same health
block and `portals list` a one-line health column. Nothing printed carries a secret."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
import redis

from b24pipe.sim.client import SimClient
from b24pipe.testing.offline import offline_env
from b24pipe.testing.workers import ROOT
from bench.limiter import seed
from shared import portalstore as store
from shared.keys import Keys
from shared.portals import Portal, Status
from tests.support.clientkit import cipher_of, cli, client_env, install, stored
from workers.portals.offlinerows import Batch


def _doctor(env: dict[str, str], member: str) -> tuple[int, str, set[str]]:
    done = cli(env, "portals", "doctor", member)
    as_json = cli(env, "portals", "doctor", member, "--json")
    assert done.returncode == as_json.returncode, (done.stderr, as_json.stderr)
    codes = {p["code"] for p in orjson.loads(as_json.stdout)["health"]["problems"]}
    return done.returncode, done.stdout + done.stderr, codes


def _bind(env: dict[str, str], member: str) -> None:
    bound = cli(env, "portals", "bind", member)
    assert bound.returncode == 0, bound.stderr


def test_doctor_names_each_failure_and_its_fix(
    simulator: SimClient, r: redis.Redis, keys: Keys, base_env: dict[str, str]
) -> None:
    env = client_env(base_env, simulator, B24PIPE_PUBLIC_URL="http://127.0.0.1:9")
    pair, member = install(simulator, r, env)
    secrets = {pair.access_token, pair.refresh_token, pair.application_token}

    # nothing bound yet: the bindings are missing
    status, out, codes = _doctor(env, member)
    assert status == 1 and codes == {"bindings_missing"}
    assert "ONAPPTEST" in out and f"b24pipe portals bind {member}" in out

    _bind(env, member)
    status, out, codes = _doctor(env, member)
    assert (status, codes) == (0, set()), out
    assert out.rstrip().endswith("healthy")

    # an app update drops the bindings
    simulator.update_app(member)
    status, out, codes = _doctor(env, member)
    assert status == 1 and codes == {"bindings_missing"}
    _bind(env, member)

    # payment expired
    simulator.expire_payment(member)
    status, out, codes = _doctor(env, member)
    assert status == 1 and codes == {"payment_expired"}
    simulator.expire_payment(member, expired=False)

    # the last probe never arrived
    r.hset(keys.probe(member), mapping={"result": "missing"})
    status, out, codes = _doctor(env, member)
    assert status == 1 and codes == {"probe_missing"}
    r.hset(keys.probe(member), mapping={"result": "ok", "latency": "0.5"})
    assert _doctor(env, member)[0] == 0

    # re-authorization needed (the refresh was refused): no live check, the re-auth named
    r.hset(keys.portal(member), "status", str(Status.REAUTH))
    status, out, codes = _doctor(env, member)
    assert status == 1 and codes == {"reauth"} and "install page" in out
    shown = cli(env, "portals", "show", member, "--json")
    health = orjson.loads(shown.stdout)["health"]
    assert health["healthy"] is False and [p["code"] for p in health["problems"]] == ["reauth"]
    assert health["installed"] is None and health["bindings_missing"] is None  # Redis only, never the portal
    listing = cli(env, "portals", "list")
    assert listing.returncode == 0 and "reauth" in listing.stdout.splitlines()[1]
    for text in (out, shown.stdout, listing.stdout):
        assert not any(secret in text for secret in secrets)
    assert stored(r, env, member).status is Status.REAUTH


def test_doctor_names_an_install_not_finished(
    simulator: SimClient, r: redis.Redis, keys: Keys, base_env: dict[str, str]
) -> None:
    env = client_env(base_env, simulator, B24PIPE_PUBLIC_URL="http://127.0.0.1:9")
    # an app with an install page: not finished until the page calls BX24.installFinish()
    portal = simulator.create_portal()
    member = portal.member_id
    pair = simulator.install(member, install_url=simulator.sink_url(f"page-{member}"))
    seed(
        r,
        keys.ns,
        cipher_of(env),
        {**pair.__dict__, "member_id": member, "domain": portal.domain},
        "standard",
    )
    _bind(env, member)
    status, out, codes = _doctor(env, member)
    assert status == 1 and codes == {"install_not_finished"} and "BX24.installFinish()" in out
    simulator.finish_install(member)
    assert _doctor(env, member)[0] == 0


def test_doctor_names_an_unconfirmed_uninstall(
    simulator: SimClient, r: redis.Redis, keys: Keys, base_env: dict[str, str]
) -> None:
    env = client_env(base_env, simulator, B24PIPE_PUBLIC_URL="http://127.0.0.1:9")
    _, member = install(simulator, r, env)
    _bind(env, member)
    assert _doctor(env, member)[0] == 0
    # what workers.portals.lifecycle.confirm_uninstall records for a portal in re-auth
    r.hset(keys.portal(member), "status", str(Status.REAUTH))
    store.run(r, store.mark_uninstall_unconfirmed(keys, member, "needs re-authorization"))
    status, out, codes = _doctor(env, member)
    assert status == 1 and codes == {"reauth", "uninstall_unconfirmed"}, out
    assert "PROBLEM uninstall_unconfirmed" in out and f"`b24pipe portals purge {member}`" in out
    shown = orjson.loads(cli(env, "portals", "show", member, "--json").stdout)
    assert shown["health"]["uninstall_unconfirmed"] is True


def test_doctor_shows_the_offline_state_and_names_its_problems(
    simulator: SimClient, r: redis.Redis, keys: Keys, base_env: dict[str, str]
) -> None:
    env = offline_env(client_env(base_env, simulator, B24PIPE_PUBLIC_URL="http://127.0.0.1:9"))
    _, member = install(simulator, r, env)
    status, out, codes = _doctor(env, member)
    assert not codes & {"offline_reservation_old", "offline_unreadable"}, out
    assert "offline events: reservations unknown; backlog None; batches held 0 (oldest none)" in out
    # a reservation taken 10 days ago and never cleared, and a row that cannot be an event
    old = Batch(at=time.time() - 10 * 86400, rows=[{"ID": "1"}])
    r.hset(keys.offline_batches(member), "process-1", old.dump())
    r.rpush(keys.offline_unreadable(member), b'{"ID": "2"}')
    status, out, codes = _doctor(env, member)
    assert status == 1 and {"offline_reservation_old", "offline_unreadable"} <= codes, out
    assert "batches held 1 (oldest 10 days); unreadable rows 1" in out
    assert "about 34 days" in out and f"<ns>:offline:{member}:unreadable" in out
    shown = orjson.loads(cli(env, "portals", "show", member, "--json").stdout)
    assert shown["offline"]["batches_held"] == 1 and shown["offline"]["unreadable_rows"] == 1
    r.delete(keys.offline_batches(member), keys.offline_unreadable(member))
    assert not _doctor(env, member)[2] & {"offline_reservation_old", "offline_unreadable"}


def test_list_ends_quietly_when_its_reader_goes_away(
    r: redis.Redis, keys: Keys, base_env: dict[str, str]
) -> None:
    """`portals list | head`: more rows than a pipe holds, the reader gone after one line."""
    with r.pipeline(transaction=False) as pipe:
        for i in range(1500):
            member = f"m{i:05d}"
            pipe.hset(
                keys.portal(member),
                mapping=Portal(member_id=member, domain=f"{member}.bitrix24.test").to_hash(),
            )
            pipe.sadd(keys.portals, member)
        pipe.execute()
    reader = subprocess.Popen(["head", "-n", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    writer = subprocess.run(
        [sys.executable, "-m", "b24pipe", "portals", "list"],
        cwd=ROOT,
        env={**os.environ, **base_env},
        stdout=reader.stdin,
        stderr=subprocess.PIPE,
        timeout=120,
    )
    assert reader.stdin is not None and reader.stdout is not None
    reader.stdin.close()
    first = reader.stdout.read()
    reader.wait(timeout=30)
    assert first.startswith(b"MEMBER_ID")
    assert writer.stderr == b"" and writer.returncode in (0, 141), writer.stderr
