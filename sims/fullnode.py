"""The simulation's sample full node: verify every commit, apply every block, from genesis.

The in-process engine's validators share caches to go fast (see :mod:`sims.inproc`); this full node
shares nothing with them. It receives the committed chain as bytes — ``(height, block, commit)``
in height order, each the first decision of that height — and reads it with the one chain reader
(:class:`gridnode.chain.ChainReader`: the ≥ 2/3 commit signatures, every transaction signature,
every block re-applied with the ledger's rules and its state root compared). What it learns is a
:class:`ChainSummary`: the final state's digest, the digest at the heights the caller asks for at
the end, and the market outcome of the measured slots (:class:`sims.ledger_kpis.MarketKPIs`, fed
with every block's facts). The daemon engine feeds it a validator's SQLite store after a run; the
in-process engine feeds it as its validators decide.

Two ways to run it, same answer (same input bytes, same pure functions):

* :class:`SampleFullNode` in the engine's process (small runs: no process start-up cost);
* :class:`SampleFullNodeProcess`: the same object in a child process, fed through a pipe as
  blocks are decided, so re-verifying ~1 signature per household per slot (and settling every
  slot) runs on the second core while the engine simulates. The engine sends blocks in batches (one
  per slot boundary) and asks for the :class:`ChainSummary` at the end; Ctrl-C in the terminal is
  left to the parent (the child ignores SIGINT and exits when its pipe closes).

A block that does not read (:class:`gridnode.chain.ChainError`) is the node's ``problem``; nothing
after it is applied.

Memory: the node keeps one ledger state (the reader's), the state digests of the last ``keep``
heights (32 bytes each, not the states: every state holds its own copy of the clearing prices, one
entry per slot so far: 64 states at the end of a year held ≈ 80 MB of them) and the
market fold's per-slot figures (:mod:`sims.ledger_kpis`). Tested: after many blocks it holds no
state but the current one.

Cost (``year.toml``, 100 households): ≈ 1.75–2 CPU-s per simulated day, flat over the run,
≈ 58 % of it libsodium's Ed25519 arithmetic (one verification per transaction and three per
commit, none repeated; no batch verifier accepts exactly libsodium's signatures), the rest
decoding, the state root, settlement, clearing and the KPI fold: ``docs/ledger.md``, "Cost: the
sample full node" and "Stop 25".

Garbage collection: the child collects with the engine's thresholds (:data:`GC_THRESHOLDS`, as
:data:`sims.inproc.GC_THRESHOLDS`: a young collection every 50,000 allocations, the old
generations rarely) and freezes what it imported and the genesis before the first block, so its
collections walk the chain's recent objects instead of every module's — ≈ 3 % of its CPU over a
few simulated days at the default thresholds (396 young, 36 middle and 3 full collections in
`year.toml`'s first 3 days), none of it needed: the node's results do not depend on when garbage
is collected.

Known limit: digests are kept for the last ``keep`` heights only; a validator stuck further
behind is reported as a problem.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import importlib
import os
import pickle
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from gridnode.chain import BlockFacts, ChainError, ChainReader
from gridnode.core.ledger import Genesis, LedgerState
from sims.ledger_kpis import MarketKPIs, MarketOutcome

__all__ = ["ChainSummary", "SampleFullNode", "SampleFullNodeProcess"]

#: how many of the latest heights' state digests a full node keeps to answer digest requests at
#: the end
KEEP_STATES = 64
#: the pipe to the child process, bytes (Linux's default is 64 KiB; an unprivileged process may
#: raise it up to /proc/sys/fs/pipe-max-size, 1 MiB by default)
PIPE_BYTES = 1 << 20
#: the child's garbage-collector thresholds (the in-process engine's, ``sims.inproc.GC_THRESHOLDS``)
GC_THRESHOLDS = (50_000, 20, 100)


@dataclass(slots=True)
class ChainSummary:
    """What the sample full node learned from the committed chain."""

    height: int
    final_digest: bytes
    digests: dict[int, bytes]
    market: MarketOutcome
    problem: str = ""


@dataclass(slots=True)
class SampleFullNode:
    """Feed it the committed chain in height order; ask :meth:`summary` at the end.

    ``slots``: the measured slots (first, last) whose market outcome it keeps."""

    genesis: Genesis
    slots: tuple[int, int]
    keep: int = KEEP_STATES
    problem: str = ""
    reader: ChainReader = field(init=False)
    kpis: MarketKPIs = field(init=False)
    _recent: deque[tuple[int, bytes]] = field(init=False)  # (height, state digest)

    def __post_init__(self) -> None:
        self.reader = ChainReader(self.genesis)
        self.kpis = MarketKPIs(self.genesis, *self.slots)
        self._recent = deque([(0, self.reader.state.digest())], maxlen=self.keep)

    @property
    def state(self) -> LedgerState:
        return self.reader.state

    def feed(self, height: int, block: bytes, commit: bytes) -> BlockFacts | None:
        """Read block ``height``; its facts, or ``None`` once there is a problem (the first
        problem stops the node: everything after it is ignored)."""
        if self.problem:
            return None
        try:
            facts = self.reader.read(height, block, commit)
        except ChainError as exc:
            self.problem = f"replay: {exc}"
            return None
        self.kpis.add(facts)
        # the digest, not the state (module rules); the reader compared it with the block's
        # state root, so this reads its memo
        self._recent.append((self.reader.height, self.reader.state.digest()))
        return facts

    def feed_all(self, blocks: Iterable[tuple[int, bytes, bytes]]) -> None:
        for height, block, commit in blocks:
            self.feed(height, block, commit)

    def summary(self, digest_at: Iterable[int], *, through: int | None = None) -> ChainSummary:
        """The digests at ``digest_at`` and the market outcome of the measured slots up to
        ``through`` (default: all of them)."""
        state = self.reader.state
        by_height = dict(self._recent)
        digests: dict[int, bytes] = {}
        problem = self.problem
        for h in sorted(set(digest_at)):
            if h in by_height:
                digests[h] = by_height[h]
            elif not problem and h > state.height:
                problem = f"replay: a validator is at height {h}, the full node at {state.height}"
            elif not problem:
                problem = f"replay: no state kept for height {h} (only the last {self.keep})"
        return ChainSummary(
            height=state.height,
            final_digest=state.digest(),
            digests=digests,
            market=self.kpis.finish(state, through=through),
            problem=problem,
        )


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """The child process: feed batches until asked for the summary (or its input closes).

    Frames are pickles (trusted: parent and child are the same program) read from ``inp``; the one
    answer, a :class:`ChainSummary`, is pickled to ``out``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes the pipe
    node: SampleFullNode | None = None
    while True:
        try:
            kind, payload = pickle.load(inp)
        except EOFError:
            return
        if kind == "genesis":
            node = SampleFullNode(Genesis.from_dict(payload[0]), payload[1], keep=payload[2])
            gc.collect()
            gc.freeze()  # the modules and the genesis live as long as the process
            gc.set_threshold(*GC_THRESHOLDS)
        elif kind == "blocks" and node is not None:
            node.feed_all(payload)
        elif kind == "summary" and node is not None:
            digest_at, through = payload
            summary = node.summary(digest_at, through=through)
            pickle.dump(summary, out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
            return


class SampleFullNodeProcess:
    """A :class:`SampleFullNode` in a child process (``python -m sims.fullnode``), fed through a
    pipe.

    A plain subprocess rather than :mod:`multiprocessing`: ``spawn`` would re-import the caller's
    main module, which breaks scripts without a ``__main__`` guard."""

    def __init__(
        self, genesis: Genesis, slots: tuple[int, int], *, keep: int = KEEP_STATES
    ) -> None:
        # the child imports this very package, wherever the caller found it
        root = str(Path(__file__).resolve().parents[1])
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sims.fullnode"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        # a bigger pipe (Linux): a slot's batch fits in it, so the engine does not wait for the
        # child to read it while the child is busy re-verifying the previous one
        with contextlib.suppress(AttributeError, OSError):
            assert self._proc.stdin is not None
            fcntl.fcntl(self._proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._pending: list[tuple[int, bytes, bytes]] = []
        self._send(("genesis", (genesis.to_dict(), slots, keep)))

    def _send(self, frame: tuple[str, Any]) -> None:
        # a child that died (its traceback is on stderr) is reported by summary(), not here
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ValueError):
            pickle.dump(frame, self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.flush()

    def feed(self, height: int, block: bytes, commit: bytes) -> None:
        self._pending.append((height, block, commit))

    def feed_all(self, blocks: Iterable[tuple[int, bytes, bytes]]) -> None:
        self._pending.extend(blocks)

    def flush(self) -> None:
        """Send what was fed since the last flush (the engine calls this once per slot)."""
        if self._pending:
            self._send(("blocks", self._pending))
            self._pending = []

    def summary(self, digest_at: Iterable[int], *, through: int | None = None) -> ChainSummary:
        self.flush()
        self._send(("summary", (list(digest_at), through)))
        assert self._proc.stdout is not None
        try:
            result: ChainSummary = pickle.load(self._proc.stdout)
        except EOFError:
            code = self._proc.wait()
            raise RuntimeError(
                f"the full-node process ended without an answer (exit {code}; its error is above)"
            ) from None
        finally:
            self.close()
        return result

    def close(self) -> None:
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - only if the child hangs
            self._proc.kill()
            self._proc.wait()


if __name__ == "__main__":
    # run the imported module's serve, so what it pickles is sims.fullnode.ChainSummary
    importlib.import_module("sims.fullnode").serve(sys.stdin.buffer, sys.stdout.buffer)
