"""Events keep flowing, end to end: a real `b24pipe ingress` and real `b24pipe worker`
processes, the Bitrix24 simulator as portal and authorization server.

An install is all it takes: the portal's bindings are made without any manual step, a
person's edit reaches the handler, the handler's write-back echo is not dispatched. An app
update that silently drops every binding is healed at once when a token arrives, and within
one `B24PIPE_BIND_CHECK_INTERVAL` when none does; no number of passes binds anything twice.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import redis

from b24pipe.redisserver import free_port
from b24pipe.sim.client import SimClient
from b24pipe.testing.ingress import ingress_process
from b24pipe.testing.workers import stop, wait_for
from shared.keys import Keys
from tests.support.clientkit import client_env, metric, scrape, start_logged_worker


def seen_key(ns: str) -> str:
    """Where tests/support/binding_handlers.py records the deal updates it handled."""
    return f"{ns}:test:deal-updates"


WANTED = {"ONCRMDEALUPDATE", "ONAPPTEST", "ONAPPUPDATE", "ONAPPUNINSTALL"}


def _ours(simulator: SimClient, member_id: str, url: str) -> list[str]:
    rows: list[dict[str, Any]] = simulator.stats(member_id)["bindings"]
    return [str(b["event"]) for b in rows if b["handler"] == url]


def _handled(r: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in r.lrange(seen_key(keys.ns), 0, -1)]


def _edit(simulator: SimClient, member_id: str, deal_id: int, title: str) -> None:
    simulator.change_entity(member_id, "deal", "update", id=deal_id, fields={"TITLE": title}, user_id=2)


def test_bindings_are_made_at_install_kept_and_healed(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    port, metrics_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/b24/events"
    env = client_env(
        base_env,
        simulator,
        B24PIPE_PUBLIC_URL=f"http://127.0.0.1:{port}",
        B24PIPE_BIND_CHECK_INTERVAL="0",
        B24PIPE_PROBE_INTERVAL="0",
    )
    env["B24PIPE_HANDLERS"] = "tests.support.binding_handlers"
    portal = simulator.create_portal()
    member = portal.member_id
    with ingress_process(env, port):
        workers.append(start_logged_worker(env, tmp_path / "worker.log", "--metrics-port", str(metrics_port)))

        # Install: nothing else. The worker binds after the verified ONAPPINSTALL.
        simulator.install(member, handler_url=url)
        assert wait_for(lambda: set(_ours(simulator, member, url)) >= WANTED, timeout=60), _ours(
            simulator, member, url
        )
        deal_id = int(
            simulator.change_entity(member, "deal", "add", fields={"TITLE": "new"}, user_id=2)["id"]
        )
        _edit(simulator, member, deal_id, "first edit")
        assert wait_for(lambda: len(_handled(r, keys)) == 1, timeout=60)
        assert _handled(r, keys)[0]["user_id"] == 2
        # the handler's own write comes back as an echo, which is taken and not dispatched
        echo = 'b24pipe_worker_jobs_total{event="ONCRMDEALUPDATE",outcome="echo"}'
        assert wait_for(lambda: metric(scrape(metrics_port), echo) == 1, timeout=60)
        assert len(_handled(r, keys)) == 1

        # An update that drops every binding and announces itself: healed at once.
        simulator.update_app(member, send_event=True)
        assert wait_for(lambda: set(_ours(simulator, member, url)) >= WANTED, timeout=60)
        _edit(simulator, member, deal_id, "after the update")
        assert wait_for(lambda: len(_handled(r, keys)) == 2, timeout=60)

        # A silent update (the default: no ONAPPUPDATE): with the periodic check off nothing heals...
        simulator.update_app(member)
        assert _ours(simulator, member, url) == []
        stop(workers.pop())
        # ...and with it on, one short interval does, without any token arriving.
        env["B24PIPE_BIND_CHECK_INTERVAL"] = "2"
        workers.append(start_logged_worker(env, tmp_path / "worker2.log"))
        assert wait_for(lambda: set(_ours(simulator, member, url)) >= WANTED, timeout=60)
        _edit(simulator, member, deal_id, "after the silent update")
        assert wait_for(lambda: len(_handled(r, keys)) == 3, timeout=60)

        # Passes keep coming; none binds twice (a duplicate would be ERROR_CORE).
        assert wait_for(
            lambda: (tmp_path / "worker2.log").read_text().count('"bindings reconciled"') >= 3, 60
        )
        counts = Counter(_ours(simulator, member, url))
        assert set(counts.values()) == {1}, counts
        assert simulator.stats(member)["errors"].get("ERROR_CORE", 0) == 0
        stop(workers.pop())
    assert r.scard(keys.bindings_missing) == 0
    assert float(r.hget(keys.last_event, member) or 0) > 0  # what `portals doctor` ages
