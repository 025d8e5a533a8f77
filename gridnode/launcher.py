"""Start many daemons from one pre-imported parent: the launcher (a zygote).

A daemon's start-up CPU is almost all imports (py-libp2p's core modules import the libraries of
every transport and service it ships: ``docs/benchmarks.md``). When one machine runs many daemons (the
daemon simulation engine, ``gridnode demo``, the tests), each paid that again. A
:class:`Launcher` is a long-lived process (``python -m gridnode.launcher``) that imports what a
daemon needs once, then forks one child per daemon; the child runs ``python -m gridnode ARGS``'s
code path itself (:func:`runpy.run_module` of ``gridnode``, as ``-m`` does), so there is no second
copy of the daemon's start-up. Rules:

* **Nothing running when forking.** The launcher imports :data:`PRELOAD` with one thread and no
  event loop, socket or file of the daemon open; numeric libraries are held to one thread
  (:data:`THREAD_ENV`: OpenBLAS otherwise starts its thread pool when numpy is imported, and a
  forked child would inherit a pool whose threads do not exist). It checks that it has exactly one
  thread (``/proc/self/task``) before serving, collects garbage once and freezes what the imports
  made (``gc.freeze``: a child's collections then never touch, so never copy, the parent's pages).
* **A child is a daemon like any other.** Its own session (``setsid``: its own process group, no
  terminal), stdin ``/dev/null``, stdout and stderr to the log file the caller opened, SIGINT,
  SIGTERM and SIGCHLD back to Python's defaults, the caller's environment, working directory and
  ``nice`` increment. It exits the way ``python -m gridnode`` exits (``sys.exit`` through the
  interpreter's normal shutdown), so SIGTERM, SIGINT and SIGKILL and the exit codes are the same.
* **Exit statuses from the parent, signals without a pid race.** The launcher is the children's
  parent: it waits on each child's pidfd, reaps it and sends its exit status (Popen's convention:
  ``-N`` for killed by signal N) to the caller. With the child's pid it passes the caller a pidfd
  (``SCM_RIGHTS``), which the caller signals (``pidfd_send_signal``): it names that process even
  after it was reaped, never a later process that reused the pid.
* **No orphans.** A child asks for SIGTERM when the launcher dies (``PR_SET_PDEATHSIG``): it stops
  cleanly as on any SIGTERM. When the caller sees the launcher gone, :class:`LaunchedProcess`
  handles of children still running wait for them (SIGKILL after a grace period), report -9 or
  -15 and append one line to each daemon's log saying why; :meth:`Launcher.spawn` then raises
  :class:`LauncherGone`. When the caller goes away (its end of the socket closes) or the launcher
  gets SIGTERM, the launcher stops its children (SIGTERM, then SIGKILL after a grace period) and
  exits. SIGINT (a terminal's ^C) is ignored by the launcher: the caller stops its daemons.
* **What a child does not get from its own interpreter**: the launcher's hash seed
  (``PYTHONHASHSEED``; Python's ``random`` is re-seeded in each child), its interpreter-start
  settings (variables ``PYTHON*``: a spawn asking for other values is refused) and single-threaded
  BLAS. A standalone ``gridnode run`` still pays the imports: this helps only where one machine
  starts many daemons.

Why not :mod:`multiprocessing`'s forkserver (``set_forkserver_preload``): one forkserver per
calling process, shared with every other use of multiprocessing in it and not closable through
public API; each child first re-imports the caller's ``__main__`` module (pytest's, a benchmark
script's) and exits through multiprocessing's bootstrap (``os._exit``, no atexit handlers), not the
``python -m gridnode`` path; signals go by pid after the forkserver has already reaped the child;
its children outlive it.

Linux only (pidfds: kernel ≥ 5.3; ``prctl``).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import runpy
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from gridnode.cli.run import BLAS_THREADS_ENV
from market.errors import UsageError

__all__ = [
    "LAUNCHER_ENV",
    "PRELOAD",
    "THREAD_ENV",
    "LaunchedProcess",
    "Launcher",
    "LauncherGone",
    "default_launcher",
    "launcher_enabled",
]

#: what a daemon imports (validators and households: the command line's run command, the start-up
#: checks, the daemon, the household driver and meters); a child imports anything else itself
PRELOAD: Final = (
    "gridnode.cli",
    "gridnode.cli.run",
    "gridnode.startup",
    "gridnode.daemon",
    "gridnode.household_driver",
    "gridnode.meter",
    "gridnode.meters",
)
#: set before the imports: numeric libraries must not start threads in a process that forks
#: (the settings an exec'd ``gridnode run`` takes too)
THREAD_ENV: Final = BLAS_THREADS_ENV
#: ``GRIDNODE_LAUNCHER=0`` (or ``false``): :class:`sims.daemons.LocalCommunity` exec's each daemon
#: (``subprocess.Popen``) instead of forking it from the process-wide launcher
#: (:func:`default_launcher`); ``1``/``true``, empty or unset: the launcher
LAUNCHER_ENV: Final = "GRIDNODE_LAUNCHER"
#: the values :data:`LAUNCHER_ENV` may take (any case, surrounding blanks ignored)
_LAUNCHER_SWITCH: Final = {"": True, "1": True, "true": True, "0": False, "false": False}
#: seconds a child has to stop after SIGTERM before it is killed (launcher closing or gone)
GRACE_S: Final = 15.0
_MAX_MESSAGE: Final = 1 << 18
_PR_SET_PDEATHSIG: Final = 1


class LauncherGone(RuntimeError):
    """The launcher process is no longer there (it died, or was closed): nothing can be spawned."""


def _send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def _exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


# ----------------------------------------------------------------------------------- caller side


class LaunchedProcess:
    """A daemon forked by a :class:`Launcher`, with the part of :class:`subprocess.Popen`'s surface
    the daemon tools use: ``pid``, ``args``, ``returncode``, ``poll()``, ``wait(timeout)``,
    ``send_signal()``, ``terminate()``, ``kill()``."""

    def __init__(
        self, launcher: Launcher, pid: int, pidfd: int, args: list[str], log: Path
    ) -> None:
        self._launcher = launcher
        self.pid = pid
        self.args = args
        self.log = log
        self.returncode: int | None = None
        self._pidfd: int | None = pidfd

    def poll(self) -> int | None:
        if self.returncode is None:
            self._launcher._pump(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            self._launcher._pump(0.5 if left is None else min(0.5, left))
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the child (nothing once its exit is known; a child that just ended and was
        reaped is not signalled: the pidfd never names another process)."""
        self.poll()
        with self._launcher._lock:  # the pidfd is closed under this lock when the exit is known
            if self.returncode is not None or self._pidfd is None:
                return
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _exited(self, code: int) -> None:
        self.returncode = code
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def _exited_readable(self, timeout_s: float) -> bool:
        """Whether the child has exited within ``timeout_s`` (its pidfd turns readable)."""
        if self._pidfd is None:
            return True
        ready, _, _ = select.select([self._pidfd], [], [], timeout_s)
        return bool(ready)

    def __repr__(self) -> str:
        return f"<LaunchedProcess pid={self.pid} returncode={self.returncode}>"


class Launcher:
    """The caller's side of a launcher process (see the module rules).

    ``Launcher.start()`` starts it and waits until it has imported :data:`PRELOAD`;
    :meth:`spawn` forks a daemon; :meth:`close` stops the daemons still running and the launcher.
    Not for daemons run under a command prefix (``ip netns exec``): those are exec'd.
    """

    def __init__(self, process: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.process = process
        self._sock = sock
        self._lock = threading.RLock()
        self._children: dict[int, LaunchedProcess] = {}
        self._replies: dict[int, tuple[dict[str, Any], list[int]]] = {}
        self._next_id = 0
        self.gone: str | None = None  # why the launcher is gone, once it is
        #: the launcher's imports: CPU seconds, modules loaded (its "ready" message)
        self.preload: dict[str, Any] = {}
        self._env = dict(os.environ)

    @classmethod
    def start(cls, *, env: Mapping[str, str] | None = None, timeout_s: float = 180.0) -> Launcher:
        """Start a launcher with ``env`` (default: this process's environment) plus
        :data:`THREAD_ENV`, and wait until it has imported what a daemon needs."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        full = {**(os.environ if env is None else env), **THREAD_ENV}
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "gridnode.launcher", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env=full,
            )
        finally:
            theirs.close()
        mine.setblocking(False)
        launcher = cls(process, mine)
        launcher._env = full
        launcher.preload, _ = launcher._await_reply(-1, timeout_s)
        return launcher

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def spawn(
        self,
        args: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        nice: int = 0,
        cwd: Path | None = None,
    ) -> LaunchedProcess:
        """Fork a child that runs ``python -m gridnode ARGS`` with stdout and stderr appended to
        ``log`` (see the module rules); ``env`` is its whole environment (default: this process's).
        :class:`LauncherGone` if the launcher is not there, :class:`OSError` if it could not
        fork, :class:`ValueError` for an environment that differs from the launcher's in a
        ``PYTHON*`` variable (read when an interpreter starts: start another launcher)."""
        full = dict(os.environ if env is None else env)
        differ = sorted(
            k
            for k in set(full) | set(self._env)
            if k.startswith("PYTHON") and full.get(k) != self._env.get(k)
        )
        if differ:
            raise ValueError(
                f"the launcher's interpreter was started with other {', '.join(differ)}: "
                "start a Launcher with this environment, or spawn with subprocess"
            )
        if nice < 0:
            raise ValueError(f"nice must be >= 0, got {nice}")
        self._check_alive()
        with self._lock:
            self._next_id += 1
            rid = self._next_id
        request = {
            "op": "spawn",
            "id": rid,
            "args": list(args),
            "env": {**full, **THREAD_ENV},
            "cwd": str(cwd or Path.cwd()),
            "nice": nice,
        }
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            with self._lock:
                try:
                    _send(self._sock, request, [fd])
                except OSError:
                    self._pump(0.0)
                    self._check_alive()
                    raise
        finally:
            os.close(fd)
        reply, fds = self._await_reply(rid, 60.0)
        if reply["op"] == "error":
            raise OSError(reply.get("errno", 0), f"the launcher could not fork: {reply['error']}")
        child = LaunchedProcess(self, reply["pid"], fds[0], ["gridnode", *args], log)
        with self._lock:
            self._children[child.pid] = child
            early = self._replies.pop(-child.pid, None)  # it exited before we registered it
            if early is not None:
                child._exited(early[0]["code"])
        return child

    def close(self, timeout_s: float = GRACE_S) -> None:
        """SIGTERM the children still running, wait up to ``timeout_s`` (then SIGKILL), and stop
        the launcher."""
        live = [c for c in list(self._children.values()) if c.poll() is None]
        for child in live:
            child.terminate()
        deadline = time.monotonic() + timeout_s
        for child in live:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(30)
        if self.gone is None:
            self.gone = f"the daemon launcher (pid {self.pid}) was closed"
        with contextlib.suppress(OSError):
            self._sock.close()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    # ------------------------------------------------------------------ messages

    def _check_alive(self) -> None:
        if self.gone is not None:
            raise LauncherGone(self.gone)

    def _await_reply(self, rid: int, timeout_s: float) -> tuple[dict[str, Any], list[int]]:
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if rid in self._replies:
                    return self._replies.pop(rid)
            self._check_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                raise LauncherGone(
                    f"the daemon launcher (pid {self.pid}) did not answer in {timeout_s:.0f} s"
                )
            self._pump(min(left, 0.5))

    def _pump(self, timeout_s: float) -> None:
        """Read what the launcher sent (waiting up to ``timeout_s`` for the first message)."""
        if self.gone is not None:
            return
        with contextlib.suppress(OSError, ValueError):  # closed meanwhile
            select.select([self._sock], [], [], timeout_s)
        with self._lock:
            while self.gone is None:
                try:
                    data, fds, _, _ = socket.recv_fds(self._sock, _MAX_MESSAGE, 1)
                except BlockingIOError:
                    return
                except OSError:
                    data, fds = b"", []
                for fd in fds:
                    os.set_inheritable(fd, False)
                if not data:
                    self._lost()
                    return
                self._handle(json.loads(data), fds)

    def _handle(self, message: dict[str, Any], fds: list[int]) -> None:
        op = message["op"]
        if op == "ready":
            self._replies[-1] = (message, fds)
        elif op in ("spawned", "error"):
            self._replies[message["id"]] = (message, fds)
        elif op == "exit":
            child = self._children.pop(message["pid"], None)
            if child is None:  # before spawn() registered it
                self._replies[-message["pid"]] = (message, fds)
            else:
                child._exited(message["code"])

    def _lost(self) -> None:
        """The launcher's end closed: say why, and account for every child still running."""
        try:
            code = self.process.wait(5.0)
            how = f"killed by signal {-code}" if code < 0 else f"exited {code}"
        except subprocess.TimeoutExpired:
            how = "closed its socket"
        self.gone = f"the daemon launcher (pid {self.pid}) {how}"
        with contextlib.suppress(OSError):
            self._sock.close()
        live = [c for c in self._children.values() if c.returncode is None]
        self._children.clear()
        for child in live:  # PR_SET_PDEATHSIG sent them SIGTERM
            code = -signal.SIGTERM
            if not child._exited_readable(GRACE_S):
                with contextlib.suppress(ProcessLookupError):
                    if child._pidfd is not None:
                        signal.pidfd_send_signal(child._pidfd, signal.SIGKILL)
                child._exited_readable(30.0)
                code = -signal.SIGKILL
            child._exited(code)
            with contextlib.suppress(OSError), child.log.open("a", encoding="utf-8") as f:
                f.write(
                    f"gridnode launcher: {self.gone}; this daemon (pid {child.pid}) was stopped "
                    f"with it (its exit status is unknown; reported as {code})\n"
                )


#: the process-wide launcher of :func:`default_launcher`, once started
_DEFAULT: dict[str, Launcher] = {}


def launcher_enabled() -> bool:
    """Whether tools start daemons from a launcher by default: not when ``$GRIDNODE_LAUNCHER`` is
    ``0`` or ``false``, nor off Linux (pidfds, ``prctl``). Any other value than those, ``1``,
    ``true`` or empty is refused (:class:`~market.errors.UsageError`: the CLI prints one line and
    exits 2) rather than read as either."""
    raw = os.environ.get(LAUNCHER_ENV, "")
    wanted = _LAUNCHER_SWITCH.get(raw.strip().lower())
    if wanted is None:
        raise UsageError(
            f"${LAUNCHER_ENV} is {raw!r}: expected 1 or true (fork daemons from the launcher, the "
            "default) or 0 or false (exec each daemon)"
        )
    return wanted and sys.platform == "linux" and hasattr(os, "pidfd_open")


def default_launcher() -> Launcher | None:
    """The process-wide launcher (started on first use, closed at exit), or ``None`` when
    :func:`launcher_enabled` says no."""
    if not launcher_enabled():
        return None
    current = _DEFAULT.get("launcher")
    if current is None or current.gone is not None:
        import atexit  # noqa: PLC0415 - only when a launcher is used

        current = _DEFAULT["launcher"] = Launcher.start()
        atexit.register(current.close)
    return current


# ----------------------------------------------------------------------------------- launcher side


def _preload() -> dict[str, Any]:
    """Import what a daemon needs, check no thread was started, freeze the imports' objects."""
    import importlib  # noqa: PLC0415

    from gridnode.lazyimports import install  # noqa: PLC0415

    t0 = time.process_time()
    install()  # as `gridnode run` does: its children import no more than a standalone daemon
    for name in PRELOAD:
        importlib.import_module(name)
    threads = os.listdir("/proc/self/task")
    if len(threads) != 1:
        raise RuntimeError(
            f"the launcher has {len(threads)} threads after its imports: forking it is unsafe "
            f"(a library started a thread; {', '.join(THREAD_ENV)} are set to 1)"
        )
    gc.collect()
    gc.freeze()
    return {"cpu_s": round(time.process_time() - t0, 3), "modules": len(sys.modules)}


def _stop_children(children: dict[int, int]) -> None:
    """SIGTERM every child, reap them (SIGKILL after :data:`GRACE_S`)."""
    for pidfd in children.values():
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for pid, pidfd in children.items():
        ready, _, _ = select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(pidfd)
    children.clear()


def _become_child(request: dict[str, Any], log_fd: int, parent: int) -> list[str]:
    """In the forked child: the daemon's process settings (see the module rules); its argv."""
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the launcher died before prctl: stop as it would have made us
        os._exit(128 + signal.SIGTERM)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(devnull)
    os.close(log_fd)
    if not os.isatty(1):  # as a fresh interpreter buffers a stdout that is no terminal
        sys.stdout.reconfigure(line_buffering=False)  # type: ignore[union-attr]
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request["nice"]:
        os.nice(request["nice"])
    return ["gridnode", *request["args"]]


def serve(sock: socket.socket) -> list[str] | int:
    """The launcher's loop: fork a child per request, report each child's exit status.

    Returns the child's argv in a forked child (which then runs it: :func:`_run_child`), or the
    launcher's exit code once the caller went away or SIGTERM came.
    """
    parent = os.getpid()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    terminated = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal terminated
        terminated = True

    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, on_term)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "sock")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    children: dict[int, int] = {}  # pid -> pidfd

    def close_all() -> None:
        sel.close()
        for fd in (wake_r, wake_w, *children.values()):
            os.close(fd)

    while not terminated:
        for key, _ in sel.select():
            if key.data == "wake":
                os.read(wake_r, 512)
            elif key.data == "sock":
                data, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 1)
                if not data:  # the caller went away
                    terminated = True
                    break
                request = json.loads(data)
                try:
                    pid = os.fork()
                except OSError as exc:
                    os.close(fds[0])
                    with contextlib.suppress(OSError):  # the caller gone: its EOF comes next
                        _send(sock, {"op": "error", "id": request["id"], "error": str(exc),
                                     "errno": exc.errno})  # fmt: skip
                    continue
                if pid == 0:
                    close_all()
                    sock.close()
                    return _become_child(request, fds[0], parent)
                os.close(fds[0])
                pidfd = os.pidfd_open(pid)
                children[pid] = pidfd
                sel.register(pidfd, selectors.EVENT_READ, pid)
                with contextlib.suppress(OSError):  # the caller gone: its EOF comes next
                    _send(sock, {"op": "spawned", "id": request["id"], "pid": pid}, [pidfd])
            else:
                pid = key.data
                _, status = os.waitpid(pid, 0)
                sel.unregister(key.fd)
                os.close(children.pop(pid))
                with contextlib.suppress(OSError):  # the caller may be gone
                    _send(sock, {"op": "exit", "pid": pid, "code": _exit_code(status)})
    _stop_children(children)
    sel.close()
    os.close(wake_r)
    os.close(wake_w)
    return 0


def _run_child(argv: list[str]) -> None:
    """Run ``python -m gridnode ARGS`` in this (forked) interpreter, as ``-m`` runs it."""
    sys.argv = argv
    runpy.run_module("gridnode", run_name="__main__", alter_sys=True)


def main(argv: Sequence[str]) -> list[str] | int:
    sock = socket.socket(fileno=int(argv[0]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C: the caller stops the daemons
    try:
        info = _preload()
    except Exception as exc:  # reported to the caller, then exit
        print(f"gridnode launcher: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    _send(sock, {"op": "ready", "pid": os.getpid(), **info})
    return serve(sock)


if __name__ == "__main__":
    result = main(sys.argv[1:])
    if isinstance(result, int):
        sys.exit(result)
    _run_child(result)
