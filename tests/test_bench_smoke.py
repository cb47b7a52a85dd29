"""The `make bench-*` scripts still run end to end (tiny sizes; their figures are not judged).

A benchmark that no longer starts is found here, by CI, rather than by the next person who
needs its numbers. What is asserted is what each script checks of itself: nothing lost or
duplicated, every 200 backed by a job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("module", "knobs", "verdict"),
    [
        (
            "bench.workers",
            {"BENCH_N": "300", "BENCH_ROUNDS": "1", "BENCH_SECONDS": "1"},
            "lost: 0  duplicated: 0  (OK)",
        ),
        ("bench.ingress", {"BENCH_ROUNDS": "1", "BENCH_SECONDS": "1", "BENCH_PORTALS": "20"}, ": OK"),
        ("bench.writes", {"BENCH_WRITES": "50"}, "writes: OK"),
        (
            "bench.hostile",
            {"BENCH_SECONDS": "1", "BENCH_PORTALS": "20", "BENCH_SLOW": "40", "BENCH_BOMB_MB": "8"},
            ": OK",
        ),
    ],
)
def test_benchmark_runs_and_checks_itself(module: str, knobs: dict[str, str], verdict: str) -> None:
    # no REDIS_URL: a benchmark starts a server of its own (it flushes what it uses)
    skipped = ("B24PIPE_", "BENCH_", "REDIS_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skipped)}
    env.update(knobs, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert verdict in done.stdout
