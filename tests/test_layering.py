"""The layering rules: pure cores import no I/O layers and never read the clock or global randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = ["market", "forecasting", "gridnode/core", "gridnode/household"]
FORBIDDEN_MODULES = {
    "market": {
        "gridnode",
        "sims",
        "forecasting",
        "trio",
        "asyncio",
        "aiohttp",
        "libp2p",
        "sqlite3",
        "socket",
    },
    "forecasting": {
        "gridnode",
        "sims",
        "trio",
        "asyncio",
        "aiohttp",
        "libp2p",
        "sqlite3",
        "socket",
    },
    "gridnode/core": {
        "sims",
        "trio",
        "asyncio",
        "aiohttp",
        "libp2p",
        "sqlite3",
        "socket",
        "gridnode.net",
    },
    # the household agent, its battery and forecast: the pure cores only, never a shell
    "gridnode/household": {
        "sims",
        "trio",
        "asyncio",
        "aiohttp",
        "libp2p",
        "sqlite3",
        "socket",
        "gridnode.net",
        "gridnode.api",
        "gridnode.cli",
        "gridnode.clock",
        "gridnode.config",
        "gridnode.daemon",
        "gridnode.household_driver",
        "gridnode.meter",
        "gridnode.node",
        "gridnode.store",
    },
}
# (module, attribute) calls that read the wall clock, the OS's randomness or global random state
FORBIDDEN_CALLS = {
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("uuid", "uuid1"),
    ("uuid", "uuid4"),
    ("os", "urandom"),
}
RANDOM_OK = {"Random"}
# Identity creation is the one place a core touches OS randomness, and only on explicit request.
ALLOWED = {("gridnode/core/crypto.py", "generate")}


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def violations(path: Path, package: str, *, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(root).as_posix()
    found: list[str] = []
    banned = FORBIDDEN_MODULES[package]

    def is_banned(name: str) -> bool:
        return any(name == b or name.startswith(b + ".") for b in banned)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                f"{rel}:{node.lineno} imports {a.name}" for a in node.names if is_banned(a.name)
            ]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and is_banned(node.module)
        ):
            found.append(f"{rel}:{node.lineno} imports from {node.module}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            pair = (node.value.id, node.attr)
            if pair in FORBIDDEN_CALLS and (rel, node.attr) not in ALLOWED:
                found.append(f"{rel}:{node.lineno} uses {node.value.id}.{node.attr}")
            if node.value.id == "random" and node.attr not in RANDOM_OK:
                found.append(f"{rel}:{node.lineno} uses global random.{node.attr}")
    return found


@pytest.mark.parametrize("package", PURE)
def test_pure_packages_obey_the_layering_rules(package: str) -> None:
    files = sources(package)
    assert files, f"no sources found under {package}"
    problems = [v for f in files for v in violations(f, package)]
    assert problems == []


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    # the probe lives in a temporary tree laid out like ours: the checker never writes to the repo
    bad = tmp_path / "market" / "_layering_probe.py"
    bad.parent.mkdir()
    bad.write_text(
        "import asyncio\nimport time\nx = time.time()\nimport random\ny = random.random()\n"
    )
    found = violations(bad, "market", root=tmp_path)
    assert found == [
        "market/_layering_probe.py:1 imports asyncio",
        "market/_layering_probe.py:3 uses time.time",
        "market/_layering_probe.py:5 uses global random.random",
    ]
