"""`b24pipe sim [--host H] [--port P] ...`: the Bitrix24 simulator (b24pipe.sim) as a command.

The same process the test suite starts (`python -m b24pipe.sim` runs this command): the
authorization server, portals' REST and the control API under `/_sim/`, all on one port.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from b24pipe.errors import UsageError
from shared.settings import Settings

DEFAULT_CLIENT_ID = "app.test.client"
DEFAULT_CLIENT_SECRET = "test-client-secret-value"  # noqa: S105 (the simulator's, not a real app's)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("sim", help="the Bitrix24 simulator (OAuth server, portals, control API)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8099, help="port (default 8099)")
    parser.add_argument("--public-url", help="base URL portals advertise (default http://HOST:PORT)")
    parser.add_argument(
        "--client-id",
        default=os.environ.get("B24_CLIENT_ID", DEFAULT_CLIENT_ID),
        help=f"the app's client id (default $B24_CLIENT_ID, else {DEFAULT_CLIENT_ID})",
    )
    parser.add_argument(
        "--client-secret",
        default=os.environ.get("B24_CLIENT_SECRET", DEFAULT_CLIENT_SECRET),
        help="the app's client secret (default $B24_CLIENT_SECRET, else the test suite's)",
    )
    parser.add_argument("--token-ttl", type=int, default=3600, help="access token lifetime, seconds")
    parser.set_defaults(run=run)


def pipeline_settings(base_url: str, client_id: str) -> str:
    """The settings a b24pipe process needs to use this simulator as its Bitrix24."""
    return (
        f"B24_OAUTH_URL={base_url} B24_CLIENT_ID={client_id} B24_CLIENT_SECRET=<--client-secret> "
        "B24PIPE_ALLOW_HTTP=1 B24PIPE_ALLOWED_HOSTS=127.0.0.1"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.token_ttl <= 0:
        raise UsageError("--token-ttl must be positive")
    if not 0 < args.port < 65536:
        raise UsageError("--port must be between 1 and 65535")
    from aiohttp import web

    from b24pipe.sim.app import make_app
    from b24pipe.sim.state import Simulator

    base = (args.public_url or f"http://{args.host}:{args.port}").rstrip("/")
    sim = Simulator(
        base_url=base, client_id=args.client_id, client_secret=args.client_secret, token_ttl=args.token_ttl
    )
    print(f"Bitrix24 simulator on {base} (OAuth server {base}, portals {base}/p/<domain>/rest/)", flush=True)
    print(f"pipeline settings: {pipeline_settings(base, args.client_id)}", flush=True)
    web.run_app(make_app(sim), host=args.host, port=args.port, print=None, access_log=None)
    return 0
