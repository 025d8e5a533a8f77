"""``gridnode run`` keeps the code its imports generate (:mod:`gridnode.codecache`).

What comes out of the cache must be what the compilation it replaces makes: every generated
function's code object and every regular expression a daemon's imports compile are compared with a
fresh compilation (fresh interpreters, as the daemon runs), the compiler flags a caller passes on
(``from __future__ import annotations``) are kept, patterns that warn still warn, a damaged or
foreign file is ignored, and a real daemon writes the file once and then starts from it.
"""

from __future__ import annotations

import dataclasses
import json
import marshal
import os
import re
import signal
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridnode import codecache
from sims.daemons import LocalCommunity

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11),
    reason="the cache is installed on CPython 3.11 only",
)

#: the imports of a daemon, as ``gridnode run`` makes them
DAEMON_IMPORTS = """
import json
from gridnode.lazyimports import install
install()
from gridnode import codecache
codecache.install()
import gridnode.startup, gridnode.daemon, gridnode.household_driver
"""


def _python(code: str, prefix: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONPYCACHEPREFIX": str(prefix)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This process's cache file under ``tmp_path`` (bytecode written), hooks out afterwards."""
    monkeypatch.setattr(sys, "pycache_prefix", str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    yield tmp_path
    codecache.save()


def test_what_a_daemon_compiles_from_the_cache_equals_a_fresh_compilation(tmp_path: Path) -> None:
    cold = _python(
        DAEMON_IMPORTS + "print(codecache.save(), json.dumps(codecache.stats()))",
        tmp_path,
    ).split(" ", 1)
    assert cold[0] == "True"
    first = json.loads(cold[1])
    assert first["hits"] == 0 and first["new_code"] > 500 and first["new_regex"] > 50
    check = textwrap.dedent(
        """
        import builtins, importlib, json, marshal
        state = codecache._now.state
        _sre = importlib.import_module("_sre")
        compiler = importlib.import_module("re._compiler")
        codes = patterns = 0
        for i in state.used:
            kind, key, value, _ = state._record(i)
            if kind == "code":
                source, filename, mode, flags, optimize = key
                fresh = builtins.compile(source, filename, mode, flags, True, optimize)
                assert value == fresh, (filename, source[:200])
                codes += 1
            else:
                (pattern, flags), (final, code, groups, index, names) = key, value
                cached = _sre.compile(pattern, final, code, groups, dict(index), names)
                assert cached == codecache._now.original_regex(pattern, flags), pattern
                patterns += 1
        print(json.dumps([codes, patterns, state.new_code, state.new_regex]))
        """
    )
    codes, patterns, new_code, new_regex = json.loads(_python(DAEMON_IMPORTS + check, tmp_path))
    assert codes > 500 and patterns > 50
    # nearly everything came from the cache (attrs' salted __hash__ and the email package's
    # set-ordered classes are new at each start until marked as varying)
    assert new_code < 0.1 * codes and new_regex < 0.1 * patterns


_CLASSES = """
from __future__ import annotations
import dataclasses, collections, typing
import attr

@dataclasses.dataclass(frozen=True, slots=True)
class Frozen:
    a: int
    b: str = "x"
    c: tuple[int, ...] = ()

@dataclasses.dataclass(order=True)
class Ordered:
    n: int
    items: list[int] = dataclasses.field(default_factory=list)

@attr.s(frozen=True, slots=True)
class Attrs:
    x: int = attr.ib()
    y: int = attr.ib(default=2)

Point = collections.namedtuple("Point", "x y", defaults=(0,))
"""

_NO_FUTURE = _CLASSES.replace("from __future__ import annotations\n", "")


def _define(source: str) -> dict[str, object]:
    """``source`` run as a module of its own (dataclasses look their module up)."""
    module = types.ModuleType("codecache_probe")
    sys.modules[module.__name__] = module
    try:
        exec(compile(source, "<probe>", "exec", dont_inherit=True), vars(module))
    finally:
        del sys.modules[module.__name__]
    return vars(module)


def _methods(namespace: dict[str, object]) -> dict[str, object]:
    out = {}
    for cls in ("Frozen", "Ordered", "Attrs", "Point"):
        for name, value in vars(namespace[cls]).items():
            code = getattr(value, "__code__", None)
            if code is not None:
                out[f"{cls}.{name}"] = (code, getattr(value, "__annotations__", None))
    return out


@pytest.mark.parametrize("source", [_CLASSES, _NO_FUTURE], ids=["future-annotations", "plain"])
def test_classes_made_through_the_cache_have_the_same_methods(cache_dir: Path, source: str) -> None:
    plain = _methods(_define(source))
    assert codecache.install()
    cold = _methods(_define(source))  # compiled, and kept
    assert codecache.save()
    assert codecache.install()
    warm = _methods(_define(source))  # from the file
    assert codecache.save() is False  # nothing new: not rewritten
    assert codecache.stats()["hits"] >= 10  # the dataclasses', the named tuple's, attrs'
    assert codecache.stats()["new_code"] <= 1  # (attrs' __hash__ varies: salted per process)
    assert plain.keys() == cold.keys() == warm.keys()
    for name, (code, notes) in plain.items():
        assert cold[name][0] == code and warm[name][0] == code, name
        assert cold[name][1] == notes and warm[name][1] == notes, name
    ns = _define(source)
    frozen = ns["Frozen"](1)  # type: ignore[operator]
    assert repr(frozen) == "Frozen(a=1, b='x', c=())"
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen.a = 2


def test_a_pattern_that_warns_still_warns_and_others_equal_plain_ones(cache_dir: Path) -> None:
    plain = [re.compile(p, f) for p, f in (("(?P<year>[0-9]{4})-x", 0), (b"a+b", re.I))]
    for _ in range(2):
        assert codecache.install()
        re.purge()
        for pattern in plain:
            assert re.compile(pattern.pattern, pattern.flags & ~re.U) == pattern
        with pytest.warns(FutureWarning, match="Possible nested set"):
            re.compile("[[ab]c")
        with pytest.warns(FutureWarning, match="set intersection"):
            re.compile("[a&&b]")
        codecache.save()
        re.purge()
    assert codecache.stats()["hits"] >= 2


def test_save_takes_the_hooks_out(cache_dir: Path) -> None:
    import collections

    import attr._make

    compile_regex = re._compiler.compile  # type: ignore[attr-defined]
    assert codecache.install() and codecache.install()  # idempotent
    assert codecache.installed()
    assert vars(dataclasses)["exec"] is not exec
    codecache.save()
    assert not codecache.installed()
    assert "exec" not in vars(dataclasses) and "eval" not in vars(collections)
    assert "compile" not in vars(attr._make)
    assert re._compiler.compile is compile_regex  # type: ignore[attr-defined]
    assert codecache.save() is False  # once


def _framed(head: bytes) -> bytes:
    """A file laid out as :mod:`gridnode.codecache` writes it, with ``head`` as its head."""
    return len(head).to_bytes(8, "little") + head


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not marshal",
        _framed(marshal.dumps((("other", 1), frozenset(), 0, ()))),
        _framed(marshal.dumps(42)),
    ],
    ids=["empty", "garbage", "other-interpreter", "wrong-shape"],
)
def test_a_damaged_or_foreign_file_is_ignored_and_replaced(cache_dir: Path, content: bytes) -> None:
    path = codecache.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    assert codecache.install()
    ns = _define(_NO_FUTURE)
    assert ns["Frozen"](3).a == 3  # type: ignore[operator]
    assert codecache.save()
    assert path.read_bytes() != content
    assert codecache.install()
    _define(_NO_FUTURE)
    codecache.save()
    assert codecache.stats()["hits"] > 0


def test_written_as_bytecode_is_written(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # PYTHONDONTWRITEBYTECODE
    assert codecache.install()
    _define(_NO_FUTURE)
    assert codecache.save() is False
    assert not codecache.cache_path().exists()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    blocked = codecache.cache_path().parent  # a file where its directory belongs: not writable
    blocked.parent.mkdir(parents=True)
    blocked.write_text("")
    assert codecache.install()
    _define(_NO_FUTURE)
    assert codecache.save() is False
    assert blocked.read_text() == ""


def test_not_installed_on_another_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "version_info", (3, 12, 0, "final", 0))
    assert codecache.install() is False
    assert not codecache.installed() and "exec" not in vars(dataclasses)


_VARYING = """
import sys
from gridnode import codecache
codecache.install()
import attr

@attr.s(frozen=True)
class Hashed:  # attrs' __hash__ embeds a hash of its file name: salted per process
    x: int = attr.ib()

print(codecache.save(), Hashed(1) == Hashed(1))
"""


def test_code_that_differs_from_start_to_start_is_marked_and_no_longer_rewritten(
    tmp_path: Path,
) -> None:
    written = []
    for seed in (1, 2, 3, 4):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONPYCACHEPREFIX": str(tmp_path)}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        out = subprocess.run(
            [sys.executable, "-c", _VARYING], capture_output=True, text=True, check=True,
            env={**env, "PYTHONHASHSEED": str(seed)},
        )  # fmt: skip
        written.append(out.stdout.split())
    # written, then rewritten once (its file name marked as varying), then left alone
    assert written == [["True", "True"], ["True", "True"], ["False", "True"], ["False", "True"]]


def _start(d: Path, prefix: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONPYCACHEPREFIX": str(prefix)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONHASHSEED"] = "0"  # the same string hashes (set orders) at every start: above
    with (d / "daemon.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gridnode", "run", "--dir", str(d), "--ready-file",
             str(d / "ready")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip


@pytest.mark.net
@pytest.mark.timeout(180)
def test_a_daemon_writes_the_cache_once_and_then_starts_from_it(tmp_path: Path) -> None:
    lc = LocalCommunity(tmp_path / "c", validators=1, full_nodes=0, speedup=60, launcher=False)
    lc.create()
    (validator,) = lc.households
    prefix = tmp_path / "pycache"
    stamps = []
    for _ in range(3):
        (validator.dir / "ready").unlink(missing_ok=True)
        validator.process = proc = _start(validator.dir, prefix)
        try:
            lc.wait_ready(90)
            assert lc.api(0, "/api/status")["height"] >= 0
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        (found,) = prefix.rglob("generated.*.bin")
        stamps.append(found.stat().st_mtime_ns)
    # the first start writes it; the others compiled nothing it did not hold
    assert stamps[0] == stamps[1] == stamps[2]


def test_an_entry_filed_under_anothers_crc_is_a_miss_not_a_wrong_answer(tmp_path: Path) -> None:
    # two keys may share a CRC: the record holds its whole key, compared at each hit
    wanted = ("def f():\n return 1\n", "<string>", "exec", 0, -1)
    other = ("def f():\n return 2\n", "<string>", "exec", 0, -1)
    code = compile(other[0], "<string>", "exec", dont_inherit=True)
    record = marshal.dumps(("code", other, code, "<string>"))
    state = codecache._State(tmp_path / "cache.bin")
    state.records = memoryview(record)
    state.offsets.append(0)
    state.lengths.append(len(record))
    state.crcs.append(codecache._crc("code", wanted))
    assert state.find("code", wanted) is None
    state.crcs[0] = codecache._crc("code", other)
    assert state.find("code", other) == code
    assert state.hits == 1
