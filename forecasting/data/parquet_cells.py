"""Read one Parquet meter file for another process: ``python -m forecasting.data.parquet_cells PATH``.

A daemon's file meter reads a Parquet history here, in a child process
(:func:`forecasting.data.meter_files.read_meter_rows` with ``isolate=True``), so that the daemon
itself never imports pandas and pyarrow. Standard output is one msgpack map: ``columns`` (the
file's column names) and ``cells`` (the text of the cells its layout reads), or ``error`` (the
:class:`~market.errors.InvalidInput` refusing it, as keyword arguments). Exit status 0 either way;
anything else is a crash the caller reports as an unreadable file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgpack

from forecasting.data.meter_files import parquet_cells
from market.errors import InvalidInput


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m forecasting.data.parquet_cells PATH", file=sys.stderr)
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
