"""Load a script of ``benchmarks/`` as a module, for tests of its pure parts (the folder is not a
package, and its ``forecasting.py`` / ``sims.py`` would shadow ours if it were on the path)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(script: str) -> ModuleType:
    """``benchmarks/<script>.py`` as the module ``bench_<script>``, registered in ``sys.modules``
    (its dataclasses look their module up by name) before it runs."""
    name = f"bench_{script}"
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{script}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
