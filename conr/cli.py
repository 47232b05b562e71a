"""Command line entry point: ``conr <command>``; the commands live in conr/commands/.

Errors a user can fix (bad config, missing data, K too large, NaN loss, an
unwritable folder) print one clear line and exit with status 2; ``--debug``
shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .commands import COMMANDS
from .commands.common import OverrideParser

__all__ = ["main", "build_parser"]

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, FloatingPointError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conr", description="Deep image clustering with CoNR.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    # every sub-command mixes positionals, options and --section.key=value overrides freely
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OverrideParser)
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; the last completed epoch's checkpoint is kept", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
