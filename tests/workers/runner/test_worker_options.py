"""`b24pipe worker`'s metrics options: the listen address is chosen, the port range is
checked before anything starts (one line, exit 2)."""

from __future__ import annotations

import contextlib
import socket
import urllib.request

import pytest

from b24pipe.redisserver import free_port
from b24pipe.testing.workers import start_worker, stop, wait_for, worker_env


@pytest.mark.parametrize(("port", "concurrency"), [("65535", "2"), ("91000", "1"), ("-1", "1")])
def test_a_metrics_port_range_outside_1_to_65535_stops_with_one_line(
    base_env: dict[str, str], port: str, concurrency: str
) -> None:
    worker = start_worker(worker_env(base_env), "--concurrency", concurrency, "--metrics-port", port)
    assert worker.wait(30) == 2
    message = worker.stderr.read().decode() if worker.stderr else ""
    assert "--metrics-port" in message and "Traceback" not in message
    assert len(message.strip().splitlines()) == 1


def _answers(host: str, port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as answer,
    ):
        return b"b24pipe_queue_backlog" in answer.read()
    return False


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_metrics_listen_only_on_the_metrics_host(base_env: dict[str, str]) -> None:
    port = free_port()
    worker = start_worker(worker_env(base_env), "--metrics-host", "127.0.0.2", "--metrics-port", str(port))
    try:
        assert wait_for(lambda: _answers("127.0.0.2", port)), "no /metrics on 127.0.0.2"
        assert _refused("127.0.0.1", port)
    finally:
        stop(worker)


def test_a_worker_that_keeps_crashing_at_start_stops_the_supervisor(base_env: dict[str, str]) -> None:
    """Worker 1's metrics port is taken: each start fails at once (one line, exit 1). The
    supervisor gives up after a few fast crashes in a row, stops worker 0, and exits 1 with
    one line naming the worker, instead of a silent restart loop."""
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 1))
        taken.listen()
        supervisor = start_worker(
            worker_env(base_env),
            "--concurrency",
            "2",
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(port),
        )
        try:
            assert supervisor.wait(120) == 1
        finally:
            stop(supervisor)
    lines = (supervisor.stderr.read().decode() if supervisor.stderr else "").strip().splitlines()
    assert "Traceback" not in "\n".join(lines)
    assert "worker 1 exited" in lines[-1] and "giving up" in lines[-1]
    assert sum("address already in use" in line.lower() for line in lines) >= 2  # each crash said why
    assert _refused("127.0.0.1", port), "worker 0 must be stopped with the supervisor"
