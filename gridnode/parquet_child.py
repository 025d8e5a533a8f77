"""A Parquet meter file read by a child process, so that the daemon never imports pandas and
pyarrow (≈ 110 MB it would keep for good): :func:`read_cells` (the daemon's side, what
:class:`gridnode.meter.FileMeter` gives :func:`forecasting.data.meter_files.read_meter_rows`) and
``python -m gridnode.parquet_child PATH`` (the child, :func:`main`).

The child runs :func:`forecasting.data.meter_files.parquet_cells` and writes one msgpack map on
its standard output: ``columns`` (the file's column names) and ``cells`` (the text of the cells
its layout reads), or ``error`` (the :class:`~market.errors.InvalidInput` refusing it, as keyword
arguments); exit status 0 either way. The daemon applies the same rules to those cells, so the
rows and the refusals (file, row, column) are those of reading the file in process (tested).
A child that crashes, answers garbage or takes longer than :data:`TIMEOUT_S` makes the file
``unreadable``, one line; nothing is written.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Final

import msgpack

from gridnode.child import last_words, run_module
from market.errors import InvalidInput

__all__ = ["TIMEOUT_S", "main", "read_cells"]

#: how long the child may take to read one file (a year of 15-minute rows: ≈ 1 s)
TIMEOUT_S: Final = 300.0


def read_cells(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """:func:`forecasting.data.meter_files.parquet_cells` of ``path``, run in a child process."""
    arg = str(Path(path).resolve())  # the child runs at the tree's root (gridnode.child)
    try:
        done = run_module("gridnode.parquet_child", arg, timeout_s=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise InvalidInput(
            reason="unreadable", subject=str(path), found=f"not read within {TIMEOUT_S:.0f} s"
        ) from None
    except OSError as exc:
        raise InvalidInput(reason="unreadable", subject=str(path), found=str(exc)) from exc
    try:
        answer = msgpack.unpackb(done.stdout) if done.returncode == 0 else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise InvalidInput(
            reason="unreadable", subject=str(path), found=f"its reader ended {last_words(done)}"
        )
    if "error" in answer:  # named as the caller named the file, as an in-process read names it
        raise InvalidInput(**(answer["error"] | {"subject": str(path)}))
    return list(answer["columns"]), dict(answer["cells"])


def main(argv: list[str]) -> int:
    """The child: one file's cells, or its refusal, as msgpack on standard output."""
    from forecasting.data.meter_files import parquet_cells  # noqa: PLC0415 - the child's only

    if len(argv) != 1:
        print("usage: python -m gridnode.parquet_child PATH", file=sys.stderr)
        return 2
    try:
        columns, cells = parquet_cells(Path(argv[0]))
        answer: dict[str, object] = {"columns": columns, "cells": cells}
    except InvalidInput as exc:
        answer = {
            "error": {
                "reason": exc.reason.value, "subject": exc.subject, "field": exc.field,
                "expected": exc.expected, "found": exc.found,
            }
        }  # fmt: skip
    sys.stdout.buffer.write(msgpack.packb(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
