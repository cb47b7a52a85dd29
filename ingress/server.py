"""Running the ingress: one process, or N processes sharing a port (SO_REUSEPORT).

Each process is a complete, independent ingress (its own event loop, Redis connections,
token cache and enqueuer); the kernel spreads connections over their sockets. The parent
only starts the children, restarts one that dies, forwards SIGTERM and waits.

SIGTERM (or SIGINT) in a serving process: first `/readyz` fails and, for
`B24PIPE_SHUTDOWN_DELAY` seconds, requests are still served (keep-alive connections
too), so an orchestrator takes the process out of rotation before it stops listening; then the listening socket closes (no new requests),
requests already read finish (their jobs are written out or answered 503 within the
enqueue timeout), the enqueuer flushes what it holds, then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import resource
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Coroutine
from multiprocessing.process import BaseProcess
from typing import Any

from aiohttp import web

from shared.logs import configure_logging, log
from shared.settings import Settings, load_settings

_logger = logging.getLogger("b24pipe.ingress.server")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client at import time
GC_YOUNG_THRESHOLD = 20_000


def event_loop() -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The event loop the ingress runs on, and its name: uvloop (its transports and timers
    are C, so a request costs less CPU), asyncio's where uvloop is not installed. The
    ingress benchmark runs its bare aiohttp app on the same loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return "asyncio", asyncio.new_event_loop
    return "uvloop", uvloop.new_event_loop


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run(main)` on the ingress's event loop."""
    with asyncio.Runner(loop_factory=event_loop()[1]) as runner:
        runner.run(main)


async def serve(settings: Settings, host: str, port: int, *, reuse_port: bool = False) -> None:
    """Serve until SIGTERM/SIGINT, then drain and return."""
    from ingress.app import EDGE_LOG_KEY, create_app  # after PROMETHEUS_MULTIPROC_DIR is set
    from ingress.edge import budgeted, connection_budget, open_descriptors, runner_options

    app = create_app(settings, verify_installs=True)
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=settings.enqueue_timeout + 2, **runner_options(settings)
    )
    await runner.setup()
    # Everything alive now (modules, the app, pydantic's validators) lives as long as the
    # process: keep it out of the collector's full passes, which would otherwise walk it
    # again and again under load.
    gc.collect()
    gc.freeze()
    # Each request allocates container objects that die with it (reference counting frees
    # them, not the collector); with many requests in flight the default threshold (700)
    # still starts a young-generation pass every few dozen requests, each walking the young
    # objects of every request in flight: a few per cent of the CPU under load.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    loop = asyncio.get_running_loop()
    assert runner.server is not None  # set up above
    soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    budget = connection_budget(soft_limit, open_descriptors())
    listener = await loop.create_server(
        budgeted(runner.server, budget, app[EDGE_LOG_KEY]), host, port, reuse_port=reuse_port, backlog=2048
    )
    log(
        _logger,
        logging.INFO,
        "ingress listening",
        host=host,
        port=port,
        pid=os.getpid(),
        loop=event_loop()[0],
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await _leave_rotation(app, settings.shutdown_delay)
    log(_logger, logging.INFO, "ingress stopping: draining", pid=os.getpid())
    listener.close()  # no new connections; the runner then drains the open ones
    await runner.cleanup()
    log(_logger, logging.INFO, "ingress stopped", pid=os.getpid())


async def _leave_rotation(app: web.Application, delay: float) -> None:
    """Fail readiness, keep serving `delay` seconds: a load balancer or Kubernetes notices
    (its readiness probe, or the endpoint removal racing the SIGTERM) and stops sending here
    while the socket still accepts, so no request it routed meanwhile meets a closed port."""
    from ingress.app import STOPPING_KEY

    app[STOPPING_KEY].set()
    if delay > 0:
        log(
            _logger,
            logging.INFO,
            "ingress stopping: not ready, still serving",
            seconds=delay,
            pid=os.getpid(),
        )
        await asyncio.sleep(delay)


def _child(host: str, port: int) -> None:
    configure_logging()
    run_loop(serve(load_settings(), host, port, reuse_port=True))


def run(settings: Settings, host: str, port: int, processes: int) -> int:
    """Serve with `processes` processes; returns the exit status."""
    from ingress.edge import raise_open_file_limit

    raise_open_file_limit(settings)  # the children inherit it
    if processes <= 1:
        run_loop(serve(settings, host, port))
        return 0
    own_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        own_dir = tempfile.mkdtemp(prefix="b24pipe-metrics-")
        os.environ[MULTIPROC_ENV] = own_dir
    try:
        return _supervise(host, port, processes)
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def _supervise(host: str, port: int, processes: int) -> int:
    from prometheus_client.multiprocess import mark_process_dead

    context = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> BaseProcess:
        child = context.Process(target=_child, args=(host, port), name="b24pipe-ingress", daemon=False)
        child.start()
        return child

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.pid is not None and child.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)

    children = [start() for _ in range(processes)]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping:
        time.sleep(0.2)
        for index, child in enumerate(children):
            if not stopping and not child.is_alive():
                log(_logger, logging.WARNING, "ingress process died; restarting", exitcode=child.exitcode)
                if child.pid is not None:
                    mark_process_dead(child.pid)  # type: ignore[no-untyped-call]
                children[index] = start()
    status = 0
    for child in children:
        child.join()
        if child.pid is not None:
            mark_process_dead(child.pid)  # type: ignore[no-untyped-call]
        status = status or (0 if child.exitcode == 0 else 1)
    return status
