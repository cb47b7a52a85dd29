"""The `make bench-*` scripts still run end to end (tiny sizes; their figures are not judged).

A benchmark that no longer starts is found here, by CI, rather than by the next person who
needs its numbers. What is asserted is what each script checks of itself: nothing lost or
duplicated, every 200 backed by a job. And a run that did no real work must fail: each
script's `problems` on a vacuous result, and real runs made vacuous, exit non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("module", "knobs", "verdict"),
    [
        (
            "bench.workers",
            {"BENCH_N": "300", "BENCH_ROUNDS": "1", "BENCH_SECONDS": "1"},
            "lost: 0  duplicated: 0  (OK)",
        ),
        ("bench.ingress", {"BENCH_ROUNDS": "1", "BENCH_SECONDS": "1", "BENCH_PORTALS": "20"}, ": OK"),
        (
            "bench.ingress_steps",
            {"BENCH_ROUNDS": "1", "BENCH_SECONDS": "1", "BENCH_PORTALS": "20"},
            "x1.00 of bare",
        ),
        (
            "bench.offline",
            {"BENCH_CHANGES": "100", "BENCH_DEALS": "10", "BENCH_OUTAGE": "1", "BENCH_POLL": "1"},
            "verdict: OK",
        ),
        ("bench.limiter", {"BENCH_PROCESSES": "2", "BENCH_SECONDS": "4"}, "b24pipe client:"),
        (
            "bench.storm",
            {"BENCH_EVENTS": "30", "BENCH_DEALS": "5", "BENCH_NAIVE_SECONDS": "3"},
            "REST requests, naive / b24pipe:",
        ),
        ("bench.writes", {"BENCH_WRITES": "50"}, "writes: OK"),
        (
            "bench.hostile",
            {"BENCH_SECONDS": "1", "BENCH_PORTALS": "20", "BENCH_SLOW": "40", "BENCH_BOMB_MB": "8"},
            ": OK",
        ),
        ("bench.failover", {"BENCH_OUTAGE": "0.5", "BENCH_STALL": "2"}, "verdict: OK"),
    ],
)
def test_benchmark_runs_and_checks_itself(module: str, knobs: dict[str, str], verdict: str) -> None:
    done = _bench(module, knobs)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert verdict in done.stdout
    assert "benchmark FAILED" not in done.stdout


def _bench(module: str, knobs: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # no REDIS_URL: a benchmark starts a server of its own (it flushes what it uses)
    skipped = ("B24PIPE_", "BENCH_", "REDIS_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skipped)}
    env.update(knobs, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_an_ingress_run_that_refuses_every_event_fails() -> None:
    """Every event nests data[FIELDS][ID] two levels deep: a depth bound of 2 refuses them all."""
    knobs = {"BENCH_ROUNDS": "1", "BENCH_SECONDS": "1", "BENCH_PORTALS": "5", "B24PIPE_MAX_FORM_DEPTH": "2"}
    done = _bench("bench.ingress", knobs)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "benchmark FAILED: the ingress side accepted no event" in done.stdout
    assert "benchmark FAILED: the ingress side answered non-200: {'400':" in done.stdout


def test_a_workers_run_with_nothing_to_handle_fails() -> None:
    done = _bench("bench.workers", {"BENCH_N": "0", "BENCH_ROUNDS": "1", "BENCH_SECONDS": "1"})
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "benchmark FAILED: no event was handled" in done.stdout


@pytest.mark.parametrize(
    ("module", "knobs", "line"),
    [
        ("bench.ingress", {"BENCH_ROUNDS": "many"}, "BENCH_ROUNDS must be a whole number >= 1, not 'many'"),
        ("bench.ingress_steps", {"BENCH_SECONDS": "-1"}, "BENCH_SECONDS must be a number >= 0.1, not '-1'"),
        ("bench.workers", {"BENCH_N": "1.5"}, "BENCH_N must be a whole number >= 0, not '1.5'"),
        ("bench.writes", {"BENCH_WRITES": "0"}, "BENCH_WRITES must be a whole number >= 1, not '0'"),
        ("bench.offline", {"BENCH_POLL": "nan"}, "BENCH_POLL must be a number >= 0.001, not 'nan'"),
        ("bench.limiter", {"BENCH_PROCESSES": "x"}, "BENCH_PROCESSES must be a whole number >= 1, not 'x'"),
    ],
)
def test_a_bad_knob_is_one_line_and_exit_2(module: str, knobs: dict[str, str], line: str) -> None:
    done = _bench(module, knobs)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", line + "\n")


def test_knobs_read_their_type_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.knobs import knob

    monkeypatch.setenv("BENCH_A", " 7 ")
    monkeypatch.setenv("BENCH_B", "2.5")
    monkeypatch.setenv("BENCH_EMPTY", "")
    assert (
        knob("BENCH_A", 3),
        knob("BENCH_B", 1.0),
        knob("BENCH_EMPTY", 4, 1),
        knob("BENCH_UNSET", 0.5),
    ) == (
        7,
        2.5,
        4,
        0.5,
    )
    assert type(knob("BENCH_A", 3.0)) is float


def _load_result(ok: int, statuses: dict[str, int]) -> dict[str, Any]:
    return {"ok": ok, "statuses": statuses}


def test_vacuous_results_are_problems() -> None:
    from bench import ingress, limiter, storm, workers
    from bench.verdict import side_problems

    good = {"ingress": [_load_result(5, {"200": 5})], "bare": [_load_result(9, {"200": 9})]}
    assert ingress.problems(good, jobs=5) == []
    refused = {"ingress": [_load_result(0, {"401": 7})], "bare": [_load_result(9, {"200": 9})]}
    assert ingress.problems(refused, jobs=0) == [
        "the ingress side accepted no event",
        "the ingress side answered non-200: {'401': 7}",
    ]
    assert ingress.problems(good, jobs=4) == ["4 jobs in Redis for 5 200s"]
    assert side_problems(good) == []
    assert side_problems({**good, "parse": [_load_result(0, {"400": 3})]}) == [
        "the parse side accepted no event",
        "the parse side answered non-200: {'400': 3}",
    ]

    assert workers.problems(10, [5.0], [6.0], 0, 0, 0.01) == []
    assert workers.problems(10, [5.0], [6.0], 1, 0, float("nan")) == [
        "1 events lost, 0 duplicated",
        "no job started in the half-rate run",
    ]

    burst = [float(i) for i in range(limiter.BURST + 5)]
    assert limiter.problems(burst, burst, {"query_limit_exceeded": 0}) == []
    assert len(limiter.problems(burst[: limiter.BURST], burst, {})) == 2

    ours = {"events_handled": 30, "requests": 12, "ingress": {"200": 30}, "quiet": True}
    naive = {"received": 40, "requests": 80, "ingress": {"200": 30}}
    assert storm.problems(ours, naive) == []
    idle = {"events_handled": 0, "requests": 0, "ingress": {"401": 30}, "quiet": True}
    assert storm.problems(idle, naive) == [
        "b24pipe handled 0 events with 0 REST requests",
        "the b24pipe side accepted no event",
        "the b24pipe side answered non-200: {'401': 30}",
    ]


def test_vacuous_offline_results_are_problems() -> None:
    from b24pipe.testing.offline import Lane
    from bench.offline import problems

    def lane(name: str, **values: Any) -> Lane:
        return Lane(name, 100, **({"sources": [name], "answers": {"200": 100}} | values))

    online, offline = lane("online"), lane("offline")
    assert problems(online, offline, lane("online", lost=10), lane("offline")) == []
    assert problems(lane("online", sources=[], answers={"None": 100}), offline, online, offline) == [
        "a lane handled nothing",
        "the ingress answered {'None': 100} (online), {'200': 100} (offline)",
    ]
    assert problems(online, offline, online, lane("offline", rows_left=3)) == [
        "the offline lane lost changes"
    ]
