"""Where a socket left open was opened.

Python's own warning for a socket collected while still open names only its addresses ("Enable
tracemalloc to get traceback", which slows the network tests past their deadlines). While the suite
runs, every ``socket.socket`` keeps the stack that created it (within a trio task: the task's
coroutine chain), and one collected while open is closed and reported with that stack, as the same
``ResourceWarning`` (an error under the suite's ``filterwarnings``, so a leak still fails the test it
surfaces in).
"""

from __future__ import annotations

import socket
import traceback
import warnings
from typing import Any

import trio

#: by ``id`` of a live socket (its slots take no attribute, and the collector clears weak references
#: before it finalizes): every socket's entry leaves when it is finalized, so an ``id`` is never stale
_opened_at: dict[int, tuple[list[traceback.FrameSummary], list[str]]] = {}


def _trio_tasks() -> list[str]:
    """The names of the running trio task and of the tasks that started its nurseries, innermost
    first: a task's stack stops at its own coroutine, so this says who asked for the socket."""
    task: trio.lowlevel.Task | None
    try:
        task = trio.lowlevel.current_task()
    except RuntimeError:  # not in trio
        return []
    names = []
    while task is not None:
        names.append(task.name)
        nursery = task.parent_nursery
        task = nursery.parent_task if nursery is not None else None
    return names


def _report_unclosed(sock: socket.socket) -> None:
    opened = _opened_at.pop(id(sock), None)
    if sock.fileno() == -1:
        return
    if opened is None:
        where = "  (not recorded)\n"
    else:
        frames, tasks = opened
        where = "".join(traceback.format_list(frames))
        where += "".join(f"  in trio task {name}\n" for name in tasks)
    text = f"unclosed {sock!r}, opened at:\n{where}"
    sock.close()
    warnings.warn(text, ResourceWarning, stacklevel=2)


def track_sockets() -> None:
    """Record each socket's creating stack from now on and report it for one collected open."""
    if getattr(socket.socket, "_gridnode_tracked", False):
        return
    original_init = socket.socket.__init__

    def init(self: socket.socket, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        _opened_at[id(self)] = (traceback.extract_stack(limit=12)[:-1], _trio_tasks())

    socket.socket.__init__ = init  # type: ignore[method-assign]
    socket.socket.__del__ = _report_unclosed  # type: ignore[attr-defined]
    socket.socket._gridnode_tracked = True  # type: ignore[attr-defined]
