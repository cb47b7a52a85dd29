"""`b24pipe worker [--burst] [--concurrency N]`: run handlers from the pipeline's queues.

With --concurrency N this process supervises N worker processes (each a long-lived
`b24pipe worker --concurrency 1`): SIGTERM/SIGINT is passed on and waited for, a worker
that dies is started again (its jobs come back through the heartbeat recovery).
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import time
from types import FrameType
from typing import Any

import redis

from b24pipe.errors import CommandError, UsageError
from shared import tracing
from shared.errors import ConfigurationError
from shared.logs import configure_logging, log
from shared.settings import Settings, require_token_keys
from workers import handlers
from workers.handlers import HandlerImportError, load_modules, registered_events
from workers.rest.ratelimit import PlanError, parse_plan


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("worker", help="run handlers from the queues")
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument(
        "--concurrency", type=int, default=1, metavar="N", help="worker processes (default 1)"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=0, metavar="P", help="serve /metrics on P (P+i per process)"
    )
    parser.add_argument(
        "--metrics-host", default="0.0.0.0", metavar="H", help="address /metrics listens on (default 0.0.0.0)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    require_token_keys(settings)
    try:
        parse_plan(settings.rate_plan)  # refused at start, not at the first REST call
    except PlanError as exc:
        raise ConfigurationError(f"invalid setting B24PIPE_RATE_PLAN: {exc}") from None
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    last_port = args.metrics_port + args.concurrency - 1
    if args.metrics_port < 0 or last_port > 65535:
        raise UsageError(
            f"--metrics-port {args.metrics_port}: ports up to {last_port} needed, the last is 65535"
        )
    try:
        load_modules(settings.handlers)
    except HandlerImportError as exc:
        raise UsageError(str(exc)) from None
    configure_logging()
    if args.concurrency == 1:
        return _run_one(args, settings)
    return _supervise(args)


def _run_one(args: argparse.Namespace, settings: Settings) -> int:
    from workers.runner import metrics as metrics_module
    from workers.runner.worker import Worker

    # which code this process runs: a typo in B24PIPE_HANDLERS shows here, not as silence
    log(
        logging.getLogger("b24pipe.worker"),
        logging.INFO,
        "handlers loaded",
        modules=list(settings.handlers),
        handlers=handlers.registered(),
    )
    tracing.configure("b24pipe-worker")  # OTEL_* variables; off unless an exporter is named
    worker = Worker(settings, burst=args.burst)
    metrics_module.initialise_label_sets(worker.metrics, registered_events())
    if args.metrics_port:
        try:
            metrics_module.serve(
                worker.metrics, worker.client, settings, args.metrics_host, args.metrics_port
            )
        except OSError as exc:
            raise CommandError(
                f"metrics on {args.metrics_host}:{args.metrics_port}: {exc.strerror}"
            ) from None
    try:
        return worker.work()
    except redis.RedisError as exc:
        raise CommandError(f"redis: {exc}") from None


def _child_command(args: argparse.Namespace, index: int) -> list[str]:
    command = [sys.executable, "-m", "b24pipe", "worker", "--concurrency", "1"]
    if args.burst:
        command.append("--burst")
    if args.metrics_port:
        command += ["--metrics-port", str(args.metrics_port + index), "--metrics-host", args.metrics_host]
    return command


FAST_CRASH = 10.0  # seconds: a worker that dies sooner after its start crashed "fast"
MAX_FAST_CRASHES = 5  # in a row, for one worker: a broken setup, not bad luck; stop


def give_up(fast_crashes: int) -> bool:
    """Whether the supervisor stops: this many fast crashes in a row of one worker process
    mean it cannot start (a port taken, a broken environment); restarting forever would hide
    that behind a crash loop."""
    return fast_crashes >= MAX_FAST_CRASHES


def _supervise(args: argparse.Namespace) -> int:
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    children = [subprocess.Popen(_child_command(args, i)) for i in range(args.concurrency)]
    started = [time.monotonic()] * args.concurrency
    fast_crashes = [0] * args.concurrency
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    while True:
        running = False
        for index, child in enumerate(children):
            code = child.poll()
            if code is None:
                running = True
            elif code != 0 and not stopping and not args.burst:
                fast = time.monotonic() - started[index] < FAST_CRASH
                fast_crashes[index] = fast_crashes[index] + 1 if fast else 0
                if give_up(fast_crashes[index]):
                    stop(signal.SIGTERM, None)
                    for other in children:
                        other.wait()
                    raise CommandError(
                        f"worker {index} exited with status {code} {fast_crashes[index]} times in a row "
                        f"within {FAST_CRASH:g}s of starting; giving up"
                    )
                time.sleep(1.0)  # a crash loop must not spin
                children[index] = subprocess.Popen(_child_command(args, index))
                started[index] = time.monotonic()
                running = True
            else:
                status = max(status, code)
        if not running:
            return status
        time.sleep(0.2)
