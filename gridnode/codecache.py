"""Start faster: keep the code Python generates while importing, as Python keeps a module's bytecode.

Importing the daemon's modules does not only run their bytecode (cached in ``__pycache__``); it
also compiles source that Python and the libraries *generate* at import: every dataclass's
methods (``dataclasses`` writes each ``__init__``, ``__repr__``, ``__eq__``, ``__hash__``,
``__setattr__`` and ``__delattr__`` as source text and compiles it), every attrs class's (trio's
and aiohttp's), every named tuple's ``__new__``, and every regular expression (parsed and
compiled to the matcher's code by the ``re`` package, in Python). On Python 3.11 that is ≈ a fifth
of a daemon's start-up CPU (``docs/benchmarks.md``), and it is the same work at every start.
:func:`install`, called by ``gridnode run`` before its imports, puts a cache in front of those
compilations; :func:`save`, called once the daemon is ready (and warm), writes what was compiled
that the cache did not have, then takes the cache out again.

Rules of this module:

* **The same objects.** A cached entry is what the compilation it replaces returns for the same
  input, and is used only for exactly that input: a generated function's code object is keyed by
  its whole source text, file name, mode, compiler flags (the ``__future__`` features the caller
  inherits, passed explicitly) and optimisation level, and executed in the caller's namespaces
  as the original ``exec``/``eval`` does; a regular expression's compiled form (flags, the
  matcher's code, groups) is keyed by its pattern (``str`` or ``bytes``) and flags and handed to
  the same ``_sre.compile`` call. A code object compiled from the same text equals the cached one
  (``==``), and so does a pattern (``re`` compares flags, pattern and code):
  ``tests/daemon/test_codecache.py`` checks both for everything a daemon compiles.
* **Only where it was checked.** The hooks go in on CPython 3.11 only (the generated text and the
  regular-expression compiler's steps are 3.11's: on another version :func:`install` does
  nothing), each one only where its target has the shape it expects. Four hooks: the
  ``exec`` that ``dataclasses`` calls (a global of that module, shadowing the builtin for it
  alone), the ``eval`` that ``collections.namedtuple`` calls, the ``compile`` that attrs'
  ``attr._make`` calls, and ``re._compiler.compile``. Nothing else in the process is changed.
* **Regular expressions that warn are not cached.** ``re`` warns (FutureWarning,
  DeprecationWarning) while parsing a few constructs: a possible nested set or set operation
  (``[[``, ``--``, ``&&``, ``~~``, ``||``), a group name in a bytes pattern, a conditional group
  reference. A pattern that contains any of those character sequences (``(?P`` in bytes,
  ``(?(``) is compiled as without the cache every time, so its warning is raised as before;
  ``re.DEBUG`` (which prints) likewise.
* **A cache file per interpreter, next to the bytecode.** One file,
  ``gridnode/__pycache__/generated.<cache tag>.bin`` (under ``sys.pycache_prefix`` when that is
  set: :func:`importlib.util.cache_from_source`): a :mod:`marshal`'d head, the records (each
  ``marshal``'d, as ``.pyc`` files are, and decoded only when its key is asked for; a record
  holds its whole key, compared at each hit, so two keys filed under one CRC cost a miss, never
  a wrong answer), then the index (flat arrays: nothing per entry is left in the heap once it is
  dropped). It is used only if its header matches this interpreter exactly (version string,
  bytecode magic number, the regular-expression engine's magic and code size, optimisation
  level); otherwise, or if it cannot be read or decoded, start-up compiles as without it and
  :func:`save` writes a new one. What differs from start to start (attrs' salted ``__hash__``,
  the email package's set-ordered character classes) is noticed at the next start and never
  kept again, so the file settles and is no longer rewritten. It is written as bytecode is: not
  under ``PYTHONDONTWRITEBYTECODE`` (``sys.dont_write_bytecode``), atomically (a temporary file
  renamed over it), and silently not where the directory is not writable. It holds at most
  :data:`MAX_ENTRIES` entries (this start's first). Whoever can write it could put code in it,
  as with ``.pyc`` files in the same directory.
* **Start-up only.** :func:`save` removes the hooks and drops the cache; generated code compiled
  later is compiled as usual. Once settled the process keeps nothing of it (idle memory as
  without it); a start that compiled entries the file lacked (the first, or one after an
  upgrade) held their keys until then and keeps ≈ 1 MB more of heap it freed.
"""

from __future__ import annotations
import __future__

import array
import binascii
import bisect
import builtins
import contextlib
import importlib.util
import marshal
import os
import sys
import threading
import types
from pathlib import Path
from typing import Any, Final

__all__ = ["MAX_ENTRIES", "cache_path", "install", "installed", "save", "stats"]

#: entries the file keeps (this start's first; ≈ 900 for a validator and a household, ≈ 1.2 MB)
MAX_ENTRIES: Final = 4096
#: the file's layout; a change makes older files unreadable (and rewritten)
_FORMAT: Final = 5
#: the ``__future__`` compiler flags a caller's code can carry, which ``compile`` inherits
_FUTURE_MASK: Final = sum(
    getattr(__future__, n).compiler_flag for n in __future__.all_feature_names
)
#: character sequences of the regular expressions whose parsing can warn in Python 3.11
_WARNS_STR: Final = ("[[", "--", "&&", "~~", "||", "(?(")
_WARNS_BYTES: Final = (*(s.encode() for s in _WARNS_STR), b"(?P")

#: a generated function's key: (source, file name, mode, compiler flags, optimisation level);
#: a regular expression's: (pattern, flags), and its value what ``_sre.compile`` takes besides
#: the pattern (flags, code, groups, group index, index group)
_Key = tuple[Any, ...]
#: the file's index (at its end, after the records): four arrays of one size, sorted by the
#: first: each record's key's CRC (:func:`_crc`), its offset in the records, its length, and
#: its place (a position in the head's tuple of places)
_TYPECODE: Final = "I"

_lock = threading.Lock()


def _crc(kind: str, key: _Key) -> int:
    """Where an entry is filed; two keys may share one (a record holds its whole key, compared
    on each hit), which costs a miss, not a wrong answer."""
    return binascii.crc32(repr((kind, key)).encode("utf-8", "surrogatepass"))


class _State:
    """The cache while installed: the file (read whole, one buffer; an entry is decoded on a
    hit only), the entries this start used and added, and the hooks' previous values.

    A record is ``marshal.dumps((kind, key, value, place))``: kind ``"code"`` (the value a code
    object) or ``"regex"``; ``place`` is where it was generated (a file name for code, the
    caller's ``module:line`` for a pattern), by which what differs from start to start is found
    (:func:`_kept`). The index is four flat arrays (no object per entry: nothing of it is left
    scattered among the start-up's objects once it is dropped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records = memoryview(b"")
        self.crcs = array.array(_TYPECODE)
        self.offsets = array.array(_TYPECODE)
        self.lengths = array.array(_TYPECODE)
        self.place_ids = array.array(_TYPECODE)
        self.places: tuple[str, ...] = ()
        self.varying: frozenset[str] = frozenset()
        self.used: set[int] = set()  # positions in the index
        self.new: dict[int, tuple[Any, ...]] = {}  # CRC -> (kind, key, value, place)
        self.hits = 0
        self.new_code = self.new_regex = 0
        self.undo: list[tuple[object, str, object]] = []  # (module, name, previous or _MISSING)

    def load(self) -> None:
        """The file's index, if it is this interpreter's (see the module rules); else empty."""
        try:
            data = memoryview(self.path.read_bytes())  # (``marshal.load`` reads piece by piece)
            size = int.from_bytes(data[:8], "little")
            header, varying, count, places = marshal.loads(data[8 : 8 + size])
            if (
                header != _header()
                or type(varying) is not frozenset
                or type(count) is not int
                or type(places) is not tuple
            ):
                return
            arrays = []
            at = len(data) - 4 * count * array.array(_TYPECODE).itemsize  # (the index: last)
            records = data[8 + size : at]
            for _ in range(4):
                a = array.array(_TYPECODE)
                a.frombytes(data[at : at + count * a.itemsize])
                at += count * a.itemsize
                arrays.append(a)
        except (OSError, EOFError, ValueError, TypeError):
            return
        if any(len(a) != count for a in arrays) or any(i >= len(places) for i in arrays[3]):
            return
        self.crcs, self.offsets, self.lengths, self.place_ids = arrays
        self.records = records
        self.places = places
        self.varying = varying

    def _record(self, i: int) -> tuple[Any, ...]:
        offset = self.offsets[i]
        return marshal.loads(self.records[offset : offset + self.lengths[i]])

    def find(self, kind: str, key: _Key) -> Any:
        """The value filed for exactly ``key``, or ``None``."""
        crc = _crc(kind, key)
        i = bisect.bisect_left(self.crcs, crc)
        if i == len(self.crcs) or self.crcs[i] != crc:
            return None
        try:
            found_kind, found_key, value, _ = self._record(i)
        except (EOFError, ValueError, TypeError):  # a damaged file: compiled as without it
            return None
        if found_kind != kind or found_key != key:
            return None
        self.hits += 1
        self.used.add(i)
        return value

    def add(self, kind: str, key: _Key, value: Any, place: str) -> None:
        if place in self.varying:
            return
        if kind == "code":
            self.new_code += 1
        else:
            self.new_regex += 1
        if not sys.dont_write_bytecode:  # (else never written: not held either)
            self.new[_crc(kind, key)] = (kind, key, value, place)  # (marshalled when written)


class _Installed:
    """The installation: its state while installed, and ``re._compiler.compile`` as it was."""

    state: _State | None = None
    original_regex: Any = None


_MISSING: Final = object()
_now = _Installed()
#: the last installation's counts once saved: hits, and new entries (generated code, regexes)
_last: dict[str, int] = {}


def _header() -> tuple[Any, ...]:
    _sre = importlib.import_module("_sre")  # the engine's constants (no stubs)
    return (
        _FORMAT,
        sys.version,
        importlib.util.MAGIC_NUMBER,
        _sre.MAGIC,
        _sre.CODESIZE,
        sys.flags.optimize,
    )


def cache_path() -> Path:
    """Where this interpreter's cache file is (see the module rules)."""
    pyc = Path(importlib.util.cache_from_source(__file__))
    return pyc.with_name(f"generated.{sys.implementation.cache_tag}.bin")


# ------------------------------------------------------------------------------------ hooks


def _compiled(source: str, filename: str, mode: str, flags: int, optimize: int) -> types.CodeType:
    """``compile(source, filename, mode, flags, dont_inherit=True, optimize=optimize)``, from
    the cache when it has it."""
    state = _now.state
    key = (source, filename, mode, flags, optimize)
    if state is not None:
        code = state.find("code", key)
        if type(code) is types.CodeType:
            return code
    code = builtins.compile(source, filename, mode, flags, True, optimize)
    if state is not None:
        state.add("code", key, code, filename)
    return code


def _inherited(frame: types.FrameType) -> int:
    """The ``__future__`` flags that ``compile``/``exec``/``eval`` of source called from
    ``frame`` inherit (as the builtins do)."""
    return frame.f_code.co_flags & _FUTURE_MASK


def _run(builtin: Any, mode: str, source: Any, globals_: Any, locals_: Any) -> Any:
    """``exec``/``eval`` of ``source`` as the builtin does it when called from the frame two
    levels up (the generating library's), compiled through the cache."""
    caller = sys._getframe(2)
    if globals_ is None:  # the builtin's defaults: the caller's namespaces
        globals_ = caller.f_globals
        if locals_ is None:
            locals_ = caller.f_locals
    if not isinstance(source, str):
        return builtin(source, globals_, locals_)
    code = _compiled(source, "<string>", mode, _inherited(caller), -1)
    return builtin(code, globals_, locals_)


def _exec(source: Any, globals: Any = None, locals: Any = None, /) -> Any:
    """``dataclasses``' ``exec`` (its generated methods)."""
    return _run(builtins.exec, "exec", source, globals, locals)


def _eval(source: Any, globals: Any = None, locals: Any = None, /) -> Any:
    """``collections``' ``eval`` (a named tuple's ``__new__``)."""
    return _run(builtins.eval, "eval", source, globals, locals)


def _compile(  # noqa: PLR0917 - the builtin's signature
    source: Any,
    filename: Any,
    mode: str,
    flags: int = 0,
    dont_inherit: bool = False,
    optimize: int = -1,
) -> Any:
    """attrs' ``compile`` (its generated methods)."""
    if not dont_inherit:
        flags |= _inherited(sys._getframe(1))
    if not isinstance(source, str) or not isinstance(filename, str) or flags & ~_FUTURE_MASK:
        return builtins.compile(source, filename, mode, flags, True, optimize)
    return _compiled(source, filename, mode, flags, optimize)


def _regex_cacheable(pattern: object, flags: int) -> bool:
    import re  # noqa: PLC0415 - imported by then

    if flags & re.DEBUG:
        return False
    if isinstance(pattern, str):
        return not any(s in pattern for s in _WARNS_STR)
    if isinstance(pattern, bytes):
        return not any(s in pattern for s in _WARNS_BYTES)
    return False


def _regex(p: Any, flags: int = 0) -> Any:
    """``re._compiler.compile``: Python 3.11's steps, its parse and code generation cached."""
    _sre = importlib.import_module("_sre")  # (no stubs for these three)
    _compiler = importlib.import_module("re._compiler")
    _parser = importlib.import_module("re._parser")
    state = _now.state
    if state is None or type(flags) is not int or not _regex_cacheable(p, flags):
        return _now.original_regex(p, flags)
    key = (p, flags)
    found = state.find("regex", key)
    if found is not None:
        try:
            final_flags, code, groups, groupindex, indexgroup = found
            return _sre.compile(p, final_flags, code, groups, dict(groupindex), indexgroup)
        except (TypeError, ValueError, RuntimeError):  # a damaged file: compiled as without it
            pass
    parsed = _parser.parse(p, flags)
    code = _compiler._code(parsed, flags)
    groupindex = parsed.state.groupdict
    names: list[str | None] = [None] * parsed.state.groups
    for k, i in groupindex.items():
        names[i] = k
    entry = (
        flags | parsed.state.flags,
        [int(c) for c in code],  # (the compiler's opcodes are int subclasses: marshal wants int)
        parsed.state.groups - 1,
        dict(groupindex),
        tuple(names),
    )
    state.add("regex", key, entry, _origin())
    return _sre.compile(p, entry[0], code, entry[2], groupindex, entry[4])


def _origin() -> str:
    """``module:line`` of the code that asked ``re`` for the pattern being compiled."""
    frame: types.FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "re":
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{frame.f_globals.get('__name__', '?')}:{frame.f_lineno}"


def _hook(state: _State, module: object, name: str, value: object) -> None:
    state.undo.append((module, name, vars(module).get(name, _MISSING)))
    setattr(module, name, value)


def _install_hooks(state: _State) -> None:
    import collections  # noqa: PLC0415
    import dataclasses  # noqa: PLC0415

    compiler = importlib.import_module("re._compiler")

    if callable(getattr(dataclasses, "_create_fn", None)):
        _hook(state, dataclasses, "exec", _exec)
    if callable(getattr(collections, "namedtuple", None)):
        _hook(state, collections, "eval", _eval)
    compile_regex = compiler.compile
    if compile_regex.__code__.co_varnames[:2] == ("p", "flags"):
        _now.original_regex = compile_regex
        _hook(state, compiler, "compile", _regex)
    if importlib.util.find_spec("attr") is not None:
        import attr._make  # noqa: PLC0415 - trio's and aiohttp's classes (imported by both)

        if callable(getattr(attr._make, "_compile_and_eval", None)):
            _hook(state, attr._make, "compile", _compile)


def installed() -> bool:
    return _now.state is not None


def install() -> bool:
    """Load this interpreter's cache and put the hooks in (see the module rules); ``False`` (and
    nothing changed) on another Python than CPython 3.11. Idempotent."""
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        return False
    with _lock:
        if _now.state is None:
            state = _State(cache_path())
            state.load()
            _install_hooks(state)
            _now.state = state
        return True


def save() -> bool:
    """Take the hooks out, drop the cache, and write it if this start compiled what it did not
    hold (see the module rules); whether a file was written."""
    with _lock:
        state = _now.state
        if state is None:
            return False
        _now.state = None
        for module, name, previous in reversed(state.undo):
            if previous is _MISSING:
                delattr(module, name)
            else:
                setattr(module, name, previous)
    _last.clear()
    _last.update(hits=state.hits, new_code=state.new_code, new_regex=state.new_regex)
    if sys.dont_write_bytecode:
        return False
    kept = _kept(state)
    if kept is None:
        return False
    varying, records = kept
    crcs, offsets, lengths, place_ids = (array.array(_TYPECODE) for _ in range(4))
    places: dict[str, int] = {}
    for entry in records.values():
        where = state.places[state.place_ids[entry]] if type(entry) is int else entry[3]
        places.setdefault(where, len(places))
    head = marshal.dumps((_header(), varying, len(records), tuple(places)))
    tmp = state.path.with_name(f"{state.path.name}.{os.getpid()}.tmp")
    try:
        state.path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            f.write(len(head).to_bytes(8, "little"))
            f.write(head)
            at = 0
            for crc in sorted(records):  # one record at a time: nothing of the file is held
                entry = records[crc]
                if type(entry) is int:  # the file's own: copied
                    offset = state.offsets[entry]
                    length = f.write(state.records[offset : offset + state.lengths[entry]])
                    place = state.places[state.place_ids[entry]]
                else:
                    length = f.write(marshal.dumps(entry))
                    place = entry[3]
                crcs.append(crc)
                offsets.append(at)
                lengths.append(length)
                place_ids.append(places[place])
                at += length
            for a in (crcs, offsets, lengths, place_ids):
                f.write(a.tobytes())
        os.replace(tmp, state.path)
    except OSError:  # not writable (an installed package's directory): as bytecode is not
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False
    return True


def _kept(state: _State) -> tuple[frozenset[str], dict[int, Any]] | None:
    """What the file keeps after this start, or ``None`` if that is what it holds: this start's
    entries (used and new), then the file's others while there is room (:data:`MAX_ENTRIES`),
    each a position in the file's index or a new entry. What differs from start to start is not
    kept: a new entry made where an old one that this start did not use was made names such a
    place, and nothing made there is kept again — attrs' generated ``__hash__`` embeds a hash of
    its file name (salted per process), and the email package builds character classes from
    sets (ordered by salted hashes). Places are file names for generated code (not
    ``<string>``), ``module:line`` for patterns."""
    if not state.new:
        return None  # (what is kept is what the file holds: only new entries change it)

    def place(i: int) -> str:
        return state.places[state.place_ids[i]]

    new_places = {entry[3] for entry in state.new.values() if entry[3] != "<string>"}
    varying = state.varying | {
        place(i) for i in range(len(state.crcs)) if i not in state.used and place(i) in new_places
    }
    records: dict[int, Any] = {}
    for i in sorted(state.used):
        if place(i) not in varying:
            records[state.crcs[i]] = i
    records.update((crc, e) for crc, e in state.new.items() if e[3] not in varying)
    for i, crc in enumerate(state.crcs):
        if len(records) >= MAX_ENTRIES:
            break
        if crc not in records and place(i) not in varying:
            records[crc] = i
    return frozenset(varying), records


def stats() -> dict[str, int]:
    """The last installation's counts once saved: cache hits, and generated code and regular
    expressions compiled that the cache did not hold."""
    return dict(_last)
