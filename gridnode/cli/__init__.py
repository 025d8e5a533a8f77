"""The ``gridnode`` command line.

Each subcommand lives in its own module under :mod:`gridnode.cli` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (``args -> exit code``).
Errors a user can fix (bad arguments, bad files) print one line on stderr and exit 2; nothing
is printed on stdout then.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from market.errors import GridnodeError

# Subcommand modules, in the order --help lists them.
_COMMANDS = (
    "demo",
    "sim",
    "init",
    "community",
    "run",
    "client",
    "forecast",
    "clear",
    "chain",
    "bill",
    "explain",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridnode",
        description="Peer-to-peer energy trading for households with rooftop PV.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        importlib.import_module(f"gridnode.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except GridnodeError as exc:
        print(f"gridnode {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gridnode {args.command}: interrupted", file=sys.stderr)
        return 130
    return code
