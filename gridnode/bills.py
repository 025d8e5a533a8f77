"""What a node keeps to serve bill proofs (``/api/proof``), and how it picks the state to prove.

Rules of this module:

* :class:`ProofKeeper` listens to the node's commits (``NodeRuntime.listeners``): it keeps the
  **head** and the last ``keep`` heights whose block **settled** slots — each as the ledger state
  after the block, the block's header bytes and the commit certificate the store holds for it.
  States are immutable, so keeping them costs only what their own mappings hold (a settlement
  height's balances, totals and bill lines).
* It is written on the node's thread and read from the API's: every update replaces an immutable
  tuple, so a reader sees one consistent view without a lock.
* :meth:`ProofKeeper.proof` picks the state: for ``slot``, the kept height that settled it (its bill
  line is in that state) or else the head if the slot is live there; for ``height``, that kept
  height; by default the head. It then cuts the proof (:func:`gridnode.core.ledger.proofs.make_bill_proof`,
  without touching the node's memoised trees). A slot or height outside the window is refused
  with ``not_found`` (``gridnode chain prove`` cuts any height from a chain).
"""

from __future__ import annotations

from typing import Final, Protocol

from gridnode.core.ledger import LedgerState
from gridnode.core.ledger.proofs import make_bill_proof
from gridnode.node import Committed
from market.errors import ApiReason, InvalidInput

__all__ = ["ProofKeeper"]

DEFAULT_KEEP: Final = 48  # settlement heights kept (about half a day of 15-minute slots)


class _Blocks(Protocol):
    def block(self, height: int) -> object | None: ...


_Entry = tuple[int, LedgerState, bytes, bytes]  # height, state, header, commit


class ProofKeeper:
    """See the module rules."""

    def __init__(self, store: _Blocks, *, keep: int = DEFAULT_KEEP) -> None:
        self._store = store
        self._keep = keep
        self._head: _Entry | None = None
        self._settled: tuple[_Entry, ...] = ()

    def on_commit(self, event: Committed) -> None:
        stored = self._store.block(event.height)
        commit = getattr(stored, "commit", None)
        if not isinstance(commit, bytes):  # pragma: no cover - a listener runs after the store
            return
        entry: _Entry = (event.height, event.state, event.block.header.raw, commit)
        if event.state.settled and self._keep > 0:
            kept = self._settled[max(0, len(self._settled) - self._keep + 1) :]
            self._settled = (*kept, entry)
        self._head = entry

    @property
    def heights(self) -> list[int]:
        """The heights a proof can be cut at (the settlement heights kept, and the head)."""
        out = [e[0] for e in self._settled]
        if self._head is not None and self._head[0] not in out:
            out.append(self._head[0])
        return out

    def _pick(self, slot: int | None, height: int | None) -> _Entry:
        head, settled = self._head, self._settled
        if head is None:
            raise InvalidInput(reason=ApiReason.NOT_FOUND, subject="proof", found="no block yet")
        if height is not None:
            for e in (*settled, head):
                if e[0] == height:
                    return e
            raise InvalidInput(
                reason=ApiReason.NOT_FOUND,
                subject="proof",
                field="height",
                expected=f"one of {self.heights}",
                found=str(height),
            )
        if slot is not None:
            for e in reversed(settled):
                if slot in e[1].settled:
                    return e
            state = head[1]
            if slot in state.orders or slot in state.trades or slot in state.readings:
                return head
            raise InvalidInput(
                reason=ApiReason.NOT_FOUND,
                subject="proof",
                field="slot",
                expected="a slot live at the head or settled at a kept height",
                found=str(slot),
            )
        return head

    def proof(
        self, household: str, *, slot: int | None = None, height: int | None = None
    ) -> tuple[int, bytes]:
        """``(height, proof bytes)`` for ``household`` (see the module rules)."""
        h, state, header, commit = self._pick(slot, height)
        if household not in state.genesis.member_index:
            raise InvalidInput(
                reason=ApiReason.NOT_FOUND,
                subject="proof",
                field="household",
                expected="a member",
                found=household[:16],
            )
        return h, make_bill_proof(
            state, header, commit, household, None if slot is None else [slot]
        )
