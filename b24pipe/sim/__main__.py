"""`python -m b24pipe.sim --host 127.0.0.1 --port 8099`: the same as `b24pipe sim`."""

from __future__ import annotations

import sys

from b24pipe.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["sim", *sys.argv[1:]]))
