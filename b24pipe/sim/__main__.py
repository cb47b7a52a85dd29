"""`python -m b24pipe.sim --host 127.0.0.1 --port 8099`: run the Bitrix24 simulator."""

from __future__ import annotations

import argparse
import os

from aiohttp import web

from b24pipe.sim.app import make_app
from b24pipe.sim.state import Simulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m b24pipe.sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--public-url", help="base URL portals advertise (default http://HOST:PORT)")
    parser.add_argument("--client-id", default=os.environ.get("B24_CLIENT_ID", "app.test.client"))
    parser.add_argument(
        "--client-secret", default=os.environ.get("B24_CLIENT_SECRET", "test-client-secret-value")
    )
    parser.add_argument("--token-ttl", type=int, default=3600, help="access token lifetime, seconds")
    args = parser.parse_args(argv)
    if args.token_ttl <= 0 or not 0 < args.port < 65536:
        parser.error("--token-ttl must be positive and --port in 1..65535")
    base = (args.public_url or f"http://{args.host}:{args.port}").rstrip("/")
    sim = Simulator(
        base_url=base, client_id=args.client_id, client_secret=args.client_secret, token_ttl=args.token_ttl
    )
    print(f"Bitrix24 simulator on {base} (OAuth server {base}, portals {base}/p/<domain>/rest/)", flush=True)
    web.run_app(make_app(sim), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
