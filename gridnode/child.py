"""One-shot child processes of this very source tree: ``python -m MODULE ARGS``, answer on stdout.

Work that would bring a heavy library into a long-running daemon for good — the `holidays`
package's ≈ 300 country modules (:mod:`gridnode.holidaycache`), pandas and pyarrow for a Parquet
meter file (:mod:`gridnode.parquet_child`) — is done in a short-lived child instead, which exits
with what it imported. Rules:

* The child runs ``sys.executable -m MODULE`` with its working directory at the root of the tree
  this module was imported from, so it imports this very code whatever the caller's working
  directory; a path passed to it must therefore be absolute.
* Its standard input is ``stdin``; its standard output and error are captured; it gets at most
  ``timeout_s`` seconds (:class:`subprocess.TimeoutExpired`). A child that cannot start raises
  :class:`OSError`. The caller reads the answer and decides what a failure costs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Final

__all__ = ["ROOT", "last_words", "run_module"]

#: the root of the source tree the children import (the parent of the ``gridnode`` package)
ROOT: Final = Path(__file__).resolve().parent.parent


def run_module(
    module: str, *args: str, stdin: bytes = b"", timeout_s: float
) -> subprocess.CompletedProcess[bytes]:
    """``python -m module args`` of this tree, run to its end (module rules)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        input=stdin, capture_output=True, cwd=ROOT, timeout=timeout_s, check=False,
    )  # fmt: skip


def last_words(done: subprocess.CompletedProcess[bytes]) -> str:
    """How a failed child ended, in one line: its exit status and the last line of its stderr."""
    tail = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return f"exit {done.returncode}: {tail[-1] if tail else 'no message'}"
