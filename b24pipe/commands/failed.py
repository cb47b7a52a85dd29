"""`b24pipe failed` (not implemented yet)."""

from __future__ import annotations

import argparse
from typing import Any

from b24pipe.errors import CommandError
from shared.settings import Settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("failed", help="failed (not implemented yet)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    raise CommandError("failed is not implemented yet")
