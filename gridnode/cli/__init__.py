"""The ``gridnode`` command line.

Each subcommand lives in its own module under :mod:`gridnode.cli` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (``args -> exit code``).

Rules of every command:

* Errors a user can fix (bad arguments, bad or missing files, a directory where a file belongs,
  a file that cannot be read or written) print **one line** on stderr and exit 2; nothing is
  printed on stdout then. ``gridnode run`` exits 1 after a fatal error while running.
* A closed output pipe (``gridnode status --json | head``) ends the command quietly, as it ends
  any Unix tool: no traceback, exit 141 (128 + SIGPIPE).
* ``--dir`` (the household's data directory) defaults to :func:`default_dir`:
  ``$GRIDNODE_DIR``, else ``$XDG_DATA_HOME/gridnode``, else ``~/.local/share/gridnode``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from market.errors import GridnodeError

__all__ = ["DIR_ENV", "add_dir_option", "build_parser", "default_dir", "main"]

# Subcommand modules, in the order --help lists them.
_COMMANDS = (
    "demo",
    "sim",
    "init",
    "community",
    "run",
    "identity",
    "client",
    "forecast",
    "clear",
    "chain",
    "bill",
    "explain",
)
#: commands whose module alone is imported when the command line names them: ``gridnode run``
#: must start fast and small (the daemon imports no pandas, plotly or forecasting back-ends it does
#: not run; docs/benchmarks.md), and the client commands fast (no numpy, pandas or libp2p;
#: docs/api.md)
_ALONE = {
    "run": "run",
    **dict.fromkeys(("status", "peers", "trades", "balance", "order"), "client"),
}
#: the environment variable naming the default data directory
DIR_ENV = "GRIDNODE_DIR"
#: exit code after a closed output pipe, as a process killed by SIGPIPE reports it
_EXIT_PIPE = 128 + 13


def default_dir() -> Path:
    """The data directory when a command is given no ``--dir``: ``$GRIDNODE_DIR``, else
    ``$XDG_DATA_HOME/gridnode`` (an absolute path), else ``~/.local/share/gridnode``."""
    explicit = os.environ.get(DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "gridnode"


def add_dir_option(parser: argparse.ArgumentParser) -> None:
    """The ``--dir`` option every household command takes, with its documented default."""
    parser.add_argument(
        "--dir",
        type=Path,
        default=default_dir(),
        help=f"the household's data directory (default: ${DIR_ENV}, else %(default)s)",
    )


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; for an ``argv`` whose command is in :data:`_ALONE`, only that
    command's module is imported (its parser and ``--help`` are the same)."""
    parser = argparse.ArgumentParser(
        prog="gridnode",
        description="Peer-to-peer energy trading for households with rooftop PV.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    first = argv[0] if argv else None
    for name in (_ALONE[first],) if first in _ALONE else _COMMANDS:
        importlib.import_module(f"gridnode.cli.{name}").register(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        text = f"{where}{exc.strerror}"
    return text.splitlines()[0] if text else type(exc).__name__


def _ours(exc: BaseException) -> BaseException:
    """The error inside (nested) exception groups, as trio's nurseries wrap them."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        try:
            code: int = args.func(args)
            sys.stdout.flush()
        except BaseExceptionGroup as group:
            inner = _ours(group)
            if isinstance(inner, GridnodeError | OSError):
                raise inner from None
            raise
    except BrokenPipeError:
        # the reader went away: point stdout at /dev/null so the exit flush cannot fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return _EXIT_PIPE
    except (GridnodeError, OSError) as exc:
        print(f"gridnode {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gridnode {args.command}: interrupted", file=sys.stderr)
        return 130
    return code
