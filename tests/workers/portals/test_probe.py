"""The delivery probe.

At the ingress: a probe's ONAPPTEST is token-checked like any event, recorded once (latency
histogram, the portal's probe state) and not queued; an ONAPPTEST without a marker in flight
is an ordinary event. End to end, with real processes: probes arrive while the portal
delivers, and once its payment expired (Bitrix24 sends nothing) they are counted missing.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import redis

from b24pipe.redisserver import free_port
from b24pipe.sim.client import SimClient
from b24pipe.testing.ingress import FORM, body, ingress_process, queued, seed_portal, serve
from b24pipe.testing.workers import stop, text, wait_for
from shared.keys import Keys
from shared.settings import Settings
from tests.support.clientkit import client_env, metric, scrape, start_logged_worker

TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


def _probe(member_id: str, token: str, marker: str) -> str:
    return body(member_id, token, event="ONAPPTEST") + f"&data%5BQUERY%5D%5Bb24pipe_probe%5D={marker}"


def test_the_ingress_records_a_probe_once_and_checks_its_token(
    settings: Settings, keys: Keys, r: redis.Redis
) -> None:
    seed_portal(r, keys, "m1", TOKEN)
    r.hset(keys.probe("m1"), mapping={"marker": "mk1", "sent_at": time.time() - 1.5})

    async def scenario() -> str:
        async with serve(settings) as client:
            forged = await client.post("/b24/events", data=_probe("m1", "f" * 32, "mk1"), headers=FORM)
            assert forged.status == 401
            assert r.hget(keys.probe("m1"), "marker") == b"mk1"  # still in flight
            first = await client.post("/b24/events", data=_probe("m1", TOKEN, "mk1"), headers=FORM)
            assert first.status == 200
            again = await client.post("/b24/events", data=_probe("m1", TOKEN, "mk1"), headers=FORM)
            assert again.status == 200  # a duplicate delivery: no longer in flight, an ordinary event
            plain = await client.post("/b24/events", data=body("m1", TOKEN, event="ONAPPTEST"), headers=FORM)
            assert plain.status == 200
            return await (await client.get("/metrics")).text()

    exposed = asyncio.run(scenario())
    state = {text(k): text(v) for k, v in r.hgetall(keys.probe("m1")).items()}
    assert state["result"] == "ok" and "marker" not in state
    assert 1.5 <= float(state["latency"]) < 60
    assert metric(exposed, "b24pipe_probe_latency_seconds_count") == 1
    assert metric(exposed, 'b24pipe_ingress_requests_total{event="ONAPPTEST",outcome="probe"}') == 1
    assert len(queued(r, keys.lifecycle_queue)) == 2  # the duplicate and the marker-less one


def test_probes_arrive_and_are_missed_once_payment_expired(
    simulator: SimClient,
    r: redis.Redis,
    keys: Keys,
    base_env: dict[str, str],
    tmp_path: Path,
    workers: list[subprocess.Popen[bytes]],
) -> None:
    port, metrics_port = free_port(), free_port()
    env = client_env(
        base_env,
        simulator,
        B24PIPE_PUBLIC_URL=f"http://127.0.0.1:{port}",
        B24PIPE_BIND_CHECK_INTERVAL="0",
        B24PIPE_PROBE_INTERVAL="1",
    )
    member = simulator.create_portal().member_id
    probe = keys.probe(member)
    with ingress_process(env, port):
        workers.append(start_logged_worker(env, tmp_path / "worker.log", "--metrics-port", str(metrics_port)))
        simulator.install(member, handler_url=f"http://127.0.0.1:{port}/b24/events")
        assert wait_for(lambda: r.hget(probe, "result") == b"ok", timeout=60), r.hgetall(probe)
        ingress_metrics = scrape(port)
        assert metric(ingress_metrics, "b24pipe_probe_latency_seconds_count") >= 1

        simulator.expire_payment(member)
        assert wait_for(lambda: r.hget(probe, "result") == b"missing", timeout=60), r.hgetall(probe)
        assert metric(scrape(metrics_port), "b24pipe_probe_missing_total") >= 1
        stop(workers.pop())
