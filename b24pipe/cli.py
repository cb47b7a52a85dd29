"""The `b24pipe` command: parses arguments, loads settings, runs one subcommand.

Exit status: 0 success, 1 runtime failure, 2 bad arguments or configuration; errors are
one line on stderr, never a traceback. Each subcommand lives in `b24pipe.commands.<name>`
and exposes `register(subparsers)`, which adds its parser and sets `run(args, settings)`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from b24pipe.commands import COMMANDS
from b24pipe.errors import CommandError, UsageError
from shared.errors import ConfigurationError
from shared.logs import configure_logging
from shared.settings import load_settings


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="b24pipe", description="Bitrix24 event pipeline")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def _cwd_first() -> None:
    """Handler modules (B24PIPE_HANDLERS) are found in the current directory whether the
    command runs as `python -m b24pipe` (which puts it first on sys.path) or as the console
    script (which puts the script's own directory there instead)."""
    cwd = os.getcwd()
    if sys.path[:1] not in ([""], [cwd]):
        sys.path.insert(0, cwd)


def _quiet_stdout() -> None:
    """The reader of our output went away (`b24pipe portals list | head`): stop writing,
    and let the interpreter's final flush go nowhere instead of raising again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    _cwd_first()
    try:
        args = build_parser().parse_args(argv)
        settings = load_settings()
        # Security-log lines of a command (token_changed, revoked, reauthorized...) go to stderr
        # as JSON, like every other process's; long-running commands reconfigure at INFO.
        configure_logging("WARNING")
        result: int = args.run(args, settings)
        return result
    except (UsageError, ConfigurationError) as exc:
        print(f"b24pipe: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"b24pipe: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
