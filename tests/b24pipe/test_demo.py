"""`b24pipe run` with no Bitrix24 app configured: the demo. A simulated Bitrix24 comes up
beside the pipeline, a demo portal installs the app through the real install flow, the
bundled example handler runs on a person's edits (its comment is in the simulated portal),
the live view counts it, a failing edit is logged with the handler's traceback, and a Ctrl-C
stops everything cleanly, the simulator included."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import redis

from b24pipe.sim.client import SimClient
from tests.support.runkit import Run, fresh_env


def _portal_deals(sim_url: str) -> list[dict[str, object]]:
    sim = SimClient(sim_url, "demo.app.client", "unused")
    (member_id,) = sim.stats()["portals"]
    webhook = sim.add_webhook(member_id, user_id=1)
    answer = sim.call(f"{webhook}crm.deal.list.json", {"select": ["ID", "TITLE", "COMMENTS"]})
    assert answer.status == 200, answer.body
    deals: list[dict[str, object]] = answer.body["result"]
    return deals


def _sim_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_sim/health", timeout=2):
            return True
    except OSError:
        return False


def _operator_commands_see_the_demo(tmp_path: Path, sim_url: str) -> None:
    """With `var/demo.env` loaded, `b24pipe status` and `portals doctor` in another terminal
    see the running demo: its namespace, its portal, healthy (bindings made, probe answered)."""
    settings = dict(
        line.split("=", 1) for line in (tmp_path / "var" / "demo.env").read_text().splitlines() if line
    )
    assert settings["B24_OAUTH_URL"] == sim_url
    assert oct((tmp_path / "var" / "demo.env").stat().st_mode & 0o777) == "0o600"
    env = fresh_env(**settings)
    (member_id,) = SimClient(sim_url, "demo.app.client", "unused").stats()["portals"]
    status = subprocess.run(
        [str(Path(sys.executable).parent / "b24pipe"), "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and member_id in status.stdout, status.stdout + status.stderr
    deadline = time.monotonic() + 60
    while True:  # the first delivery probe may still be on its way
        doctor = subprocess.run(
            [str(Path(sys.executable).parent / "b24pipe"), "portals", "doctor", member_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if doctor.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert doctor.stdout.rstrip().endswith("healthy"), doctor.stdout


def test_demo_runs_the_example_handler_on_edits_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    run = Run(tmp_path, fresh_env())
    try:
        run.wait("demo portal installed", lambda: "installed through the install flow" in run.output())
        run.wait("a handled event in the live view", lambda: run.handled() >= 2)
        found = re.search(r"a simulated Bitrix24 runs at (http://127\.0\.0\.1:\d+)", run.output())
        assert found, run.tail()
        sim_url = found.group(1)
        namespace = re.search(r"; namespace: (demo-[0-9a-f]{8})\n", run.output())
        assert namespace, run.tail()
        client = redis.Redis.from_url((tmp_path / "var" / "redis.url").read_text().strip())
        assert client.scard(f"{namespace.group(1)}:portals") == 1  # the demo's data, apart
        assert client.scard("b24pipe:portals") == 0
        client.close()
        commented = [
            d for d in _portal_deals(sim_url) if str(d.get("COMMENTS", "")).startswith("edited by user 2")
        ]
        assert commented, "the example handler wrote no comment"
        _operator_commands_see_the_demo(tmp_path, sim_url)
        run.send("f")  # an edit the example handler fails on
        run.wait("the handler's failure in the log", lambda: "ExampleFailure" in run.logs())
        before = run.accepted()
        run.send("s")  # a storm: one edit of each of 100 deals at once
        run.wait("the storm's events accepted", lambda: run.accepted() >= before + 100)
        assert "demo: storm of 100 edits" in run.output()
        assert "live: " in run.output() and " echoes suppressed " in run.output()
    finally:
        status = run.interrupt()
    logs = [json.loads(line) for line in run.logs().splitlines() if line.startswith("{")]
    loaded = [entry for entry in logs if entry["msg"] == "handlers loaded"]
    assert loaded and loaded[0]["handlers"] == {"ONCRMDEALUPDATE": ["b24pipe.example.note_deal"]}
    failures = [entry for entry in logs if entry["msg"] == "handler failed"]
    assert failures and failures[0]["handler"] == "b24pipe.example.note_deal"
    assert "in note_deal\n    raise ExampleFailure" in failures[0]["exc"]
    assert status == 0, run.tail()
    assert logs[-1]["msg"] == "pipeline stopped"
    # nothing but the example's own failures: no connection errors while stopping
    others = [
        e
        for e in logs
        if e["level"] in ("error", "critical") or ("exc" in e and "ExampleFailure" not in e["exc"])
    ]
    assert not others, others
    assert not _sim_answers(sim_url)  # the simulator stopped with the rest
    assert "Bitrix24 simulator on " in (tmp_path / "var" / "simulator.log").read_text()
