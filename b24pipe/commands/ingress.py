"""`b24pipe ingress [--host H] [--port P] [--processes N]`: the HTTP edge."""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

from b24pipe.errors import UsageError
from shared.logs import configure_logging
from shared.settings import Settings, require_token_keys


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError("must be at most 65535")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("ingress", help="the HTTP edge: receive Bitrix24 events and queue them")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=_port, default=8080, help="port to listen on (default 8080)")
    parser.add_argument(
        "--processes",
        type=_positive,
        default=1,
        help="ingress processes sharing the port (SO_REUSEPORT); default 1, use the core count in production",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    require_token_keys(settings)
    if args.processes > (os.cpu_count() or 1) * 4:
        raise UsageError(f"--processes {args.processes} is far above the {os.cpu_count()} cores here")
    port_free(args.host, args.port)
    configure_logging()
    from ingress.server import run as serve

    return serve(settings, args.host, args.port, args.processes)


def port_free(host: str, port: int) -> None:
    """A port another process listens on is refused with one line before anything starts
    (the serving processes bind with SO_REUSEPORT, which would not notice a peer)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
