"""The simulation's sample full node: verify every commit, apply every block, from genesis.

The in-process engine's validators share caches to go fast (see :mod:`sims.inproc`); this full node
shares nothing with them. It receives the committed chain as bytes — ``(height, block, commit)``
in height order, each the first decision of that height — checks each block's ≥ 2/3 commit
signatures, re-verifies every transaction signature and re-applies the block with
:func:`gridnode.core.ledger.apply` (whose state root must match). What it learns is a
:class:`Chain`: the final state's digest, the digest at the heights the caller asks for at the
end, which households had an order and what they read per slot, and each slot's clearing.

Two ways to run it, same answer (same input bytes, same pure functions):

* :class:`FullNode` in the engine's process (small runs: no process start-up cost);
* :class:`FullNodeProcess`: the same object in a child process, fed through a pipe as
  blocks are decided, so re-verifying ~2 signatures per household per slot runs on the second core
  while the engine simulates. The engine sends blocks in batches (one per slot boundary) and asks
  for the :class:`Chain` at the end; Ctrl-C in the terminal is left to the parent (the child
  ignores SIGINT and exits when its pipe closes).

Known limit: digests are kept for the last ``keep`` heights only (a state per height costs
megabytes at 1,000 households); a validator stuck further behind is reported as a problem.
"""

from __future__ import annotations

import contextlib
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

from gridnode.core.consensus_messages import ValidatorSet, decode_commit, verify_commit
from gridnode.core.ledger import (
    Genesis,
    LedgerState,
    SignedOrder,
    SignedReading,
    apply,
    decode_block,
    genesis_state,
)
from market.clearing import Trade
from market.errors import InvalidInput

__all__ = ["Chain", "FullNode", "FullNodeProcess"]

#: how many of the latest states a full node keeps to answer digest requests at the end
KEEP_STATES = 64


@dataclass(slots=True)
class Chain:
    """What the full node learned from the committed chain."""

    height: int
    final_digest: bytes
    digests: dict[int, bytes]
    orders: dict[int, set[str]]  # slot -> households with a committed order
    readings: dict[int, dict[str, int]]  # slot -> household -> metered net Wh
    cleared: dict[int, tuple[int | None, tuple[Trade, ...], int]]  # slot -> price, trades, height
    problem: str = ""


@dataclass(slots=True)
class FullNode:
    """Feed it the committed chain in height order; ask :meth:`chain` at the end."""

    genesis: Genesis
    keep: int = KEEP_STATES
    state: LedgerState = field(init=False)
    problem: str = ""
    _validators: ValidatorSet = field(init=False)
    _recent: deque[LedgerState] = field(init=False)
    _orders: dict[int, set[str]] = field(default_factory=dict)
    _readings: dict[int, dict[str, int]] = field(default_factory=dict)
    _cleared: dict[int, tuple[int | None, tuple[Trade, ...], int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = genesis_state(self.genesis)
        self._validators = ValidatorSet(tuple(bytes.fromhex(v) for v in self.genesis.validators))
        self._recent = deque([self.state], maxlen=self.keep)

    def feed(self, height: int, block: bytes, commit: bytes) -> None:
        """Verify and apply block ``height``; after the first problem everything else is ignored."""
        if self.problem:
            return
        if height != self.state.height + 1:
            self.problem = f"replay: expected block {self.state.height + 1}, got {height}"
            return
        try:
            verify_commit(self._validators, decode_commit(commit), block, height=height)
        except InvalidInput as exc:
            self.problem = f"replay: block {height}'s commit does not verify: {exc}"
            return
        before = self.state
        try:
            parsed = decode_block(block)
            self.state = apply(before, parsed)
        except InvalidInput as exc:
            self.problem = f"replay: committed block {height} breaks a ledger rule: {exc}"
            return
        for tx in parsed.txs:
            if isinstance(tx, SignedOrder):
                self._orders.setdefault(tx.order.slot, set()).add(tx.household)
            elif isinstance(tx, SignedReading):
                self._readings.setdefault(tx.slot, {})[tx.household] = tx.net_wh
        self._recent.append(self.state)
        if self.state.clearing_prices is before.clearing_prices:  # apply kept it: nothing cleared
            return
        for slot, price in self.state.clearing_prices.items():
            if slot not in before.clearing_prices:
                self._cleared[slot] = (price, self.state.trades.get(slot, ()), height)

    def feed_all(self, blocks: Iterable[tuple[int, bytes, bytes]]) -> None:
        for height, block, commit in blocks:
            self.feed(height, block, commit)

    def chain(self, digest_at: Iterable[int]) -> Chain:
        by_height = {s.height: s for s in self._recent}
        digests: dict[int, bytes] = {}
        problem = self.problem
        for h in sorted(set(digest_at)):
            if h in by_height:
                digests[h] = by_height[h].digest()
            elif not problem and h > self.state.height:
                problem = (
                    f"replay: a validator is at height {h}, the full node at {self.state.height}"
                )
            elif not problem:
                problem = f"replay: no state kept for height {h} (only the last {self.keep})"
        return Chain(
            height=self.state.height,
            final_digest=self.state.digest(),
            digests=digests,
            orders=self._orders,
            readings=self._readings,
            cleared=self._cleared,
            problem=problem,
        )


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """The child process: feed batches until asked for the chain (or its input closes).

    Frames are pickles (trusted: parent and child are the same program) read from ``inp``; the one
    answer, a :class:`Chain`, is pickled to ``out``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes the pipe
    node: FullNode | None = None
    while True:
        try:
            kind, payload = pickle.load(inp)
        except EOFError:
            return
        if kind == "genesis":
            node = FullNode(Genesis.from_dict(payload[0]), keep=payload[1])
        elif kind == "blocks" and node is not None:
            node.feed_all(payload)
        elif kind == "chain" and node is not None:
            pickle.dump(node.chain(payload), out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
            return


class FullNodeProcess:
    """A :class:`FullNode` in a child process (``python -m sims.fullnode``), fed through a pipe.

    A plain subprocess rather than :mod:`multiprocessing`: ``spawn`` would re-import the caller's
    main module, which breaks scripts without a ``__main__`` guard."""

    def __init__(self, genesis: Genesis, *, keep: int = KEEP_STATES) -> None:
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
        self._pending: list[tuple[int, bytes, bytes]] = []
        self._send(("genesis", (genesis.to_dict(), keep)))

    def _send(self, frame: tuple[str, Any]) -> None:
        # a child that died (its traceback is on stderr) is reported by chain(), not here
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

    def chain(self, digest_at: Iterable[int]) -> Chain:
        self.flush()
        self._send(("chain", list(digest_at)))
        assert self._proc.stdout is not None
        try:
            result: Chain = pickle.load(self._proc.stdout)
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
    # run the imported module's serve, so the Chain it pickles is sims.fullnode.Chain
    importlib.import_module("sims.fullnode").serve(sys.stdin.buffer, sys.stdout.buffer)
