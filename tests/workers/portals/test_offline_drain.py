"""The offline lane end to end with real worker processes against the simulator: rows of a
portal's offline queue reach the ordinary handlers once, on each object's latest state, and a
worker SIGKILLed in the middle of a drain loses nothing and leaves nothing behind."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from b24pipe.sim.client import Installation, SimClient
from b24pipe.testing.offline import EVENT, bind_offline, offline_env, queue_rows, stored_batches
from b24pipe.testing.storms import INSTALLER, PERSON, final_titles, handled, idle, runs, storm_changes
from b24pipe.testing.workers import wait_for
from shared import portalstore as store
from shared.keys import Keys
from shared.portals import Status
from tests.support.clientkit import cli, client_env, install, start_logged_worker

DEALS, CHANGES = 12, 36


def _setup(
    simulator: SimClient, r: redis.Redis, env: dict[str, str], by: int = PERSON, **portal: object
) -> tuple[Installation, str, dict[str, str], dict[str, str]]:
    """A portal with deals, ONCRMDEALUPDATE bound offline, and a storm of changes queued."""
    env = offline_env(client_env(env, simulator))
    env |= {
        "B24PIPE_HANDLERS": "b24pipe.testing.storm_handlers",
        "B24PIPE_PUBLIC_URL": "http://127.0.0.1:9",  # nobody there: the poll has to do it
        "B24PIPE_COALESCE_DELAY": "0.2",
    }
    pair, member_id = install(simulator, r, env, **portal)
    connector = bind_offline(env, member_id)
    assert connector
    bound = simulator.stats(member_id)["bindings"]
    assert {(b["event"], b["offline"], b.get("connector_id")) for b in bound} >= {
        (EVENT, 1, connector),
        ("ONOFFLINEEVENT", 0, None),
    }
    added = simulator.apply_changes(member_id, [{"action": "add", "fields": {"TITLE": "new"}}] * DEALS)
    changes = storm_changes([int(i) for i in added["ids"]], CHANGES)
    simulator.apply_changes(member_id, changes, user_id=by)
    assert queue_rows(simulator, member_id) == DEALS  # the latest row per deal
    return pair, member_id, env, final_titles(changes)


def _show(env: dict[str, str], member_id: str) -> dict[str, Any]:
    shown = cli(env, "portals", "show", member_id)
    assert shown.returncode == 0, shown.stderr
    offline: dict[str, Any] = orjson.loads(shown.stdout)["offline"]
    return offline


def _all_handled(
    simulator: SimClient, r: redis.Redis, keys: Keys, member_id: str, latest: dict[str, str]
) -> None:
    assert wait_for(lambda: handled(r, keys) == latest, timeout=90), (handled(r, keys), latest)
    assert wait_for(lambda: idle(r, keys) and queue_rows(simulator, member_id) == 0, timeout=60)
    assert stored_batches(r, keys, member_id) == {}
    assert simulator.stats(member_id)["offline_errored"] == 0
    assert all(run["sources"] == ["offline"] for run in runs(r, keys))
    # the handler's own write-backs carried the connector: nothing came back
    assert queue_rows(simulator, member_id) == 0
    for queue in keys.queues:
        assert r.zcard(f"rq:failed:{queue}") == 0


def test_offline_rows_reach_the_handlers_on_their_latest_state(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    _pair, member_id, env, latest = _setup(simulator, r, base_env)
    workers.append(start_logged_worker(env, tmp_path / "worker.log"))
    _all_handled(simulator, r, keys, member_id, latest)
    shown = _show(env, member_id)
    assert (shown["reservations"], shown["backlog"], shown["batches_held"]) == ("yes", 0, 0)
    assert shown["drain_not_finished"] is False and shown["next_poll_in"] is not None
    requests = simulator.stats(member_id)["requests"]
    assert requests.get("event.offline.get", 0) >= 1 and requests.get("event.offline.clear", 0) >= 1


@pytest.mark.parametrize(
    ("method", "fault"),
    [
        ("event.offline.get", "rest_hold"),  # reserved at Bitrix24, the answer never read
        ("event.offline.clear", "rest_stall"),  # jobs queued, the clear never arrived
    ],
)
def test_a_worker_killed_mid_drain_loses_nothing(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
    method: str,
    fault: str,
) -> None:
    _pair, member_id, env, latest = _setup(simulator, r, base_env)
    simulator.faults(member_id, slow_methods=[method], **{fault: 60.0})
    # the hourly check just ran: the first get is the reserving one, not the error lane's
    r.hset(keys.offline_state(member_id), "checked_at", time.time())
    first = start_logged_worker(env, tmp_path / "worker.log")
    workers.append(first)
    assert wait_for(lambda: simulator.stats(member_id)["requests"].get(method, 0) >= 1, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait()
    simulator.faults(member_id, slow_methods=[], **{fault: 0.0})
    # a reservation the dead drain held (the simulator may still be finishing the call)
    assert wait_for(lambda: simulator.stats(member_id)["offline_reserved"] > 0, timeout=10)
    if method == "event.offline.clear":
        assert stored_batches(r, keys, member_id)  # what the dead drain left: recovered below
    else:
        assert not stored_batches(r, keys, member_id)  # its answer never came: found by list
    # a person keeps working meanwhile: the newer state must win
    more = storm_changes(sorted({int(k) for k in latest}), DEALS // 2)
    more = [{**c, "fields": {"TITLE": c["fields"]["TITLE"] + " later"}} for c in more]
    simulator.apply_changes(member_id, more, user_id=PERSON)
    latest |= final_titles(more)
    workers.append(start_logged_worker(env, tmp_path / "worker.log"))
    _all_handled(simulator, r, keys, member_id, latest)


def test_without_reservations_reads_are_destructive_and_lose_nothing(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    _pair, member_id, env, latest = _setup(simulator, r, base_env, offline_extended=False)
    # as if feature.get had said yes: the reserving read's WRONG_LICENSE must switch the lane
    r.hset(keys.offline_state(member_id), mapping={"extended": 1, "feature_at": time.time()})
    workers.append(start_logged_worker(env, tmp_path / "worker.log"))
    _all_handled(simulator, r, keys, member_id, latest)
    assert r.hget(keys.offline_state(member_id), "extended") == b"0"
    assert simulator.stats(member_id)["errors"].get("WRONG_LICENSE", 0) >= 1


def test_rows_marked_as_errors_are_read_again(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    pair, member_id, env, latest = _setup(simulator, r, base_env)
    token = pair.access_token
    taken = simulator.rest(pair.client_endpoint, "event.offline.get", {"clear": 0}, token=token).body[
        "result"
    ]
    marked = {"process_id": taken["process_id"], "message_id": [e["MESSAGE_ID"] for e in taken["events"]]}
    assert simulator.rest(pair.client_endpoint, "event.offline.error", marked, token=token).status == 200
    assert simulator.stats(member_id)["offline_errored"] == DEALS  # hidden from normal reads now
    workers.append(start_logged_worker(env, tmp_path / "worker.log"))
    _all_handled(simulator, r, keys, member_id, latest)


def test_rows_that_cannot_be_events_are_marked_then_kept_for_a_human(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    _pair, member_id, env, latest = _setup(simulator, r, base_env)
    simulator.faults(member_id, offline_unreadable=2)
    for deal in sorted(latest, key=int)[:2]:
        simulator.change_entity(member_id, "deal", "update", id=int(deal), user_id=PERSON)
    assert queue_rows(simulator, member_id) == DEALS + 2
    workers.append(start_logged_worker(env, tmp_path / "worker.log"))
    assert wait_for(lambda: handled(r, keys) == latest, timeout=90)
    assert wait_for(lambda: simulator.stats(member_id)["offline_errored"] == 2, timeout=30)
    assert queue_rows(simulator, member_id) == 2  # marked, out of the normal lane, not lost
    r.hdel(keys.offline_state(member_id), "checked_at")  # the hourly check, now
    assert wait_for(lambda: r.llen(keys.offline_unreadable(member_id)) == 2, timeout=30)
    assert wait_for(lambda: queue_rows(simulator, member_id) == 0, timeout=30)
    assert _show(env, member_id)["unreadable_rows"] == 2


def test_a_persons_change_after_our_write_is_not_taken_for_its_echo(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    # the admin who installed the app edits deals by hand: the app writes as the same user,
    # and those writes' echo marks are never used up (the connector keeps their rows out)
    pair, member_id, env, latest = _setup(simulator, r, base_env, by=INSTALLER)
    assert pair.user_id == INSTALLER
    r.hset(keys.portal(member_id), "user_id", INSTALLER)  # the app's writes are marked as its
    workers.append(start_logged_worker(env, tmp_path / "worker.log"))
    assert wait_for(lambda: handled(r, keys) == latest, timeout=90)
    more = [{"id": int(deal), "fields": {"TITLE": f"{title} by hand"}} for deal, title in latest.items()]
    simulator.apply_changes(member_id, more, user_id=INSTALLER)
    _all_handled(simulator, r, keys, member_id, latest | final_titles(more))


def test_a_drain_waits_parked_while_the_portal_needs_reauthorization(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    _pair, member_id, env, latest = _setup(simulator, r, base_env)
    record = store.run(r, store.load_portal(keys, member_id))
    assert record is not None
    r.hset(keys.portal(member_id), "status", str(Status.REAUTH))
    workers.append(start_logged_worker(env, tmp_path / "worker.log"))
    assert wait_for(lambda: r.llen(keys.parked(member_id)) >= 1, timeout=60)
    assert queue_rows(simulator, member_id) == DEALS  # nothing was taken
    store.run(r, store.save_portal(keys, record))  # a new token arrives: parked jobs run again
    _all_handled(simulator, r, keys, member_id, latest)
