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
  set: :func:`importlib.util.cache_from_source`), in :mod:`marshal`'s format, as ``.pyc`` files
  are. It is used only if its header matches this interpreter exactly (version string, bytecode
  magic number, the regular-expression engine's magic and code size, optimisation level);
  otherwise, or if it cannot be read or decoded, start-up compiles as without it and :func:`save`
  writes a new one. It is written as bytecode is: not under ``PYTHONDONTWRITEBYTECODE``
  (``sys.dont_write_bytecode``), atomically (a temporary file renamed over it), and silently not
  where the directory is not writable. It holds at most :data:`MAX_ENTRIES` entries per kind.
  Whoever can write it could put code in it, as with ``.pyc`` files in the same directory.
* **Start-up only.** :func:`save` removes the hooks and drops the cache (the process keeps none of
  it: idle memory as without it); generated code compiled later is compiled as usual.
"""

from __future__ import annotations
import __future__

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

#: entries kept per kind (generated code, regular expressions)
MAX_ENTRIES: Final = 8192
#: the file's layout; a change makes older files unreadable (and rewritten)
_FORMAT: Final = 1
#: the ``__future__`` compiler flags a caller's code can carry, which ``compile`` inherits
_FUTURE_MASK: Final = sum(
    getattr(__future__, n).compiler_flag for n in __future__.all_feature_names
)
#: character sequences of the regular expressions whose parsing can warn in Python 3.11
_WARNS_STR: Final = ("[[", "--", "&&", "~~", "||", "(?(")
_WARNS_BYTES: Final = (*(s.encode() for s in _WARNS_STR), b"(?P")

#: a generated function's key: (source, file name, mode, compiler flags, optimisation level)
_CodeKey = tuple[str, str, str, int, int]
#: a regular expression's key, (pattern, flags), and what ``_sre.compile`` takes besides the
#: pattern (flags, code, groups, group index, index group) with where it was compiled
#: (``module:line`` of the first caller outside ``re``)
_RegexKey = tuple[str | bytes, int]
_RegexEntry = tuple[int, list[int], int, dict[str, int], tuple[str | None, ...], str]

_lock = threading.Lock()


class _Cache:
    """What the file holds: generated code (marshalled, loaded on a hit only), regular
    expressions, and where code or patterns are generated that differ from start to start (file
    names of generated code, ``module:line`` of regular expressions)."""

    def __init__(
        self,
        code: dict[_CodeKey, bytes] | None = None,
        regex: dict[_RegexKey, _RegexEntry] | None = None,
        varying: frozenset[str] = frozenset(),
    ) -> None:
        self.code = code or {}
        self.regex = regex or {}
        self.varying = varying


class _State:
    """The cache while installed: the file's, what this start used and added, and the hooks'
    previous values."""

    def __init__(self, path: Path, cache: _Cache) -> None:
        self.path = path
        self.old = cache
        self.used = _Cache()
        self.new = _Cache()
        self.hits = 0
        self.undo: list[tuple[object, str, object]] = []  # (module, name, previous or _MISSING)


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


def _load(path: Path) -> _Cache:
    try:
        data = marshal.loads(path.read_bytes())  # (``marshal.load`` reads a file piece by piece)
        header, code, regex, varying = data
    except (OSError, EOFError, ValueError, TypeError):
        return _Cache()
    if (
        header != _header()
        or type(code) is not dict
        or type(regex) is not dict
        or type(varying) is not frozenset
    ):
        return _Cache()
    return _Cache(code, regex, varying)


# ------------------------------------------------------------------------------------ hooks


def _compiled(source: str, filename: str, mode: str, flags: int, optimize: int) -> types.CodeType:
    """``compile(source, filename, mode, flags, dont_inherit=True, optimize=optimize)``, from
    the cache when it has it."""
    state = _now.state
    key = (source, filename, mode, flags, optimize)
    if state is not None:
        found = state.old.code.get(key)
        if found is not None:
            try:
                code = marshal.loads(found)
            except (EOFError, ValueError, TypeError):  # a damaged file: compiled as without it
                code = None
            if type(code) is types.CodeType:
                state.hits += 1
                state.used.code[key] = found
                return code
    code = builtins.compile(source, filename, mode, flags, True, optimize)
    if state is not None and filename not in state.old.varying:
        state.new.code[key] = marshal.dumps(code)
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
    found = state.old.regex.get(key)
    if found is not None:
        try:
            final_flags, code, groups, groupindex, indexgroup, _ = found
            compiled = _sre.compile(p, final_flags, code, groups, dict(groupindex), indexgroup)
        except (TypeError, ValueError, RuntimeError):  # a damaged file: compiled as without it
            compiled = None
        if compiled is not None:
            state.hits += 1
            state.used.regex[key] = found
            return compiled
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
        _origin(),
    )
    if entry[5] not in state.old.varying:
        state.new.regex[key] = entry
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
            path = cache_path()
            state = _State(path, _load(path))
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
    _last.update(hits=state.hits, new_code=len(state.new.code), new_regex=len(state.new.regex))
    if sys.dont_write_bytecode:
        return False
    kept = _kept(state)
    if kept is None:
        return False
    tmp = state.path.with_name(f"{state.path.name}.{os.getpid()}.tmp")
    try:
        state.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(marshal.dumps((_header(), kept.code, kept.regex, kept.varying)))
        os.replace(tmp, state.path)
    except OSError:  # not writable (an installed package's directory): as bytecode is not
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False
    return True


def _kept(state: _State) -> _Cache | None:
    """What the file keeps after this start, or ``None`` if that is what it holds: this start's
    entries (used and new), then the file's others while there is room (:data:`MAX_ENTRIES`
    each). What differs from start to start is not kept: a new entry made where an old one
    that this start did not use was made names such a place, and nothing made there is kept
    again — attrs' generated ``__hash__`` embeds a hash of its file name (salted per process),
    and the email package builds character classes from sets (ordered by salted hashes). Places
    are file names for generated code (not ``<string>``), ``module:line`` for patterns."""
    old, used, new = state.old, state.used, state.new
    named = {k[1] for k in new.code if k[1] != "<string>"}
    origins = {e[5] for e in new.regex.values()}
    varying = (
        old.varying
        | {k[1] for k in old.code if k[1] in named and k not in used.code}
        | {e[5] for k, e in old.regex.items() if e[5] in origins and k not in used.regex}
    )
    code = {k: v for k, v in (*used.code.items(), *new.code.items()) if k[1] not in varying}
    regex = {k: e for k, e in (*used.regex.items(), *new.regex.items()) if e[5] not in varying}
    for ck, cv in old.code.items():
        if len(code) >= MAX_ENTRIES:
            break
        if ck[1] not in varying:
            code.setdefault(ck, cv)
    for rk, re_ in old.regex.items():
        if len(regex) >= MAX_ENTRIES:
            break
        if re_[5] not in varying:
            regex.setdefault(rk, re_)
    if (
        code.keys() == old.code.keys()
        and regex.keys() == old.regex.keys()
        and varying == old.varying
    ):
        return None
    return _Cache(code, regex, frozenset(varying))


def stats() -> dict[str, int]:
    """The last installation's counts once saved: cache hits, and generated code and regular
    expressions compiled that the cache did not hold."""
    return dict(_last)
