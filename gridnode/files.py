"""Files as a daemon writes and reads them: atomic writes (a temporary file in the same directory,
fsync'ed, renamed over the target, the directory fsync'ed: a crash leaves the old file or the new
one, never half of either), text reads whose every failure is one line naming the file, the
daemon's own JSON-lines records read back, and the one-daemon-per-directory lock. Split from :mod:`gridnode.config`, which re-exports them."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from market.errors import UsageError

__all__ = ["LOCK_NAME", "DirLock", "fsync_path", "json_lines", "read_text", "write_atomic"]

#: the lock file in a household directory
LOCK_NAME = "gridnode.lock"


def write_atomic(path: Path, text: str, *, mode: int = 0o644, overwrite: bool = True) -> None:
    """Write ``text`` to ``path`` atomically (the module's rule); ``overwrite=False`` refuses an
    existing file (:class:`UsageError`) without a window in which two writers could both win."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            if path.is_dir():
                raise UsageError(f"{path}: is a directory, where a file belongs")
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise UsageError(f"{path} already exists: refusing to overwrite it") from None
        fsync_path(path.parent)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by its path (a directory: so a rename or create in it lasts)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_text(path: Path, *, missing: str) -> str:
    """``path``'s text (UTF-8), or a one-line :class:`UsageError` naming the file; ``missing`` is
    the message's end when there is no file."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: {missing}") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, where a file belongs") from None
    except NotADirectoryError:
        raise UsageError(f"{path}: a file is where a directory belongs on this path") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied (not readable by this user)") from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        ) from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None


def json_lines(path: Path, *, containing: str | None = None) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON-lines record the daemon appends to (``provenance.jsonl``,
    ``fedrounds.jsonl``), in file order. A damaged line (one cut short by a kill) or one that is
    not an object is skipped; a missing or unreadable file has none. With ``containing``, only
    lines holding that text are parsed (a lookup in a long record)."""
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if containing is not None and containing not in line:
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    yield row
    except OSError:
        return


class DirLock:
    """An exclusive lock on ``DIR/gridnode.lock`` (flock): one daemon per data dir.

    ``gridnode init`` creates the (empty) file; taking the lock writes nothing, so a daemon refused
    at start leaves the directory as it was. A daemon that started records its pid in it
    (:meth:`record_pid`), which a second one names when it is refused.
    """

    def __init__(self, directory: Path, name: str = LOCK_NAME) -> None:
        self.path = directory / name
        self._fd: int | None = None

    def acquire(self) -> DirLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except IsADirectoryError:
            raise UsageError(f"{self.path}: is a directory, where the lock file belongs") from None
        except OSError as exc:
            raise UsageError(
                f"{self.path}: cannot open the lock file for writing: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.path.read_text(encoding="utf-8", errors="replace").strip() or "?"
            raise UsageError(
                f"{self.path}: a daemon is already running on this directory (pid {holder})"
            ) from None
        self._fd = fd
        return self

    def record_pid(self) -> None:
        """Write this process' pid into the held lock file (after a successful start)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
