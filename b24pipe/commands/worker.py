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
from shared.logs import configure_logging, log
from shared.settings import Settings, require_token_keys
from workers import registry
from workers.registry import HandlerImportError, load_modules


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("worker", help="run handlers from the queues")
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument(
        "--concurrency", type=int, default=1, metavar="N", help="worker processes (default 1)"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=0, metavar="P", help="serve /metrics on P (P+i per process)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    require_token_keys(settings)
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    try:
        load_modules(settings.handlers)
    except HandlerImportError as exc:
        raise UsageError(str(exc)) from None
    configure_logging()
    if args.concurrency == 1:
        return _run_one(args, settings)
    return _supervise(args)


def _run_one(args: argparse.Namespace, settings: Settings) -> int:
    from workers import metrics as metrics_module
    from workers.worker import Worker

    # which code this process runs: a typo in B24PIPE_HANDLERS shows here, not as silence
    log(
        logging.getLogger("b24pipe.worker"),
        logging.INFO,
        "handlers loaded",
        modules=list(settings.handlers),
        handlers=registry.registered(),
    )
    worker = Worker(settings, burst=args.burst)
    if args.metrics_port:
        metrics_module.serve(worker.metrics, worker.client, worker.keys, args.metrics_port)
    try:
        return worker.work()
    except redis.RedisError as exc:
        raise CommandError(f"redis: {exc}") from None


def _child_command(args: argparse.Namespace, index: int) -> list[str]:
    command = [sys.executable, "-m", "b24pipe", "worker", "--concurrency", "1"]
    if args.burst:
        command.append("--burst")
    if args.metrics_port:
        command += ["--metrics-port", str(args.metrics_port + index)]
    return command


def _supervise(args: argparse.Namespace) -> int:
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    children = [subprocess.Popen(_child_command(args, i)) for i in range(args.concurrency)]
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
                time.sleep(1.0)  # a crash loop must not spin
                children[index] = subprocess.Popen(_child_command(args, index))
                running = True
            else:
                status = max(status, code)
        if not running:
            return status
        time.sleep(0.2)
