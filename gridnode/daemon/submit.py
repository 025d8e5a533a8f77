"""The daemon's transaction submission: the client side (to a validator) and the server side.

Rules of this module (``docs/protocol.md``):

* **Client**: a household sends its transactions to a validator with an acknowledged request,
  re-sent to the next validator on timeout (connected validators first): the API's single orders
  and cancels on ``…/submit/1.0.0``, a household's transactions of a slot (its bundle: reading
  and orders signed once, and any reading re-sent alone) in one ``…/submit-batch/1.0.0`` request. A validator submits to its own mempool directly.
* **Server** (validators): a submitted transaction is offered to the mempool; the answer is OK with
  its id, or REJECTED with the bare reason code. An accepted one is shared with the other
  validators (``…/tx/1.0.0``, one-way) and, if it is an order or a bundle carrying orders, queued
  for the next gossip batch.
* **Blame**: peer-facing handlers decode what a peer sent and refuse bad bytes by raising
  :class:`InvalidInput`; the net layer (:mod:`gridnode.net.peers`) records it against the peer if
  the reason is misbehaviour, once. A refusal an honest peer can meet (``slot_closed``,
  ``stale_nonce``, …) is answered with its reason and never counted. A batch carrying forged or
  foreign transactions is misbehaviour of its sender, recorded once per reason (the batch is one
  message) while every transaction still gets its answer. Only validators may share (``tx``); one
  that forwards a forged or malformed transaction is to blame.
* **Back-pressure** (validators, :class:`Backpressure`): a validator takes **orders** (and
  bundles that carry orders) only while
  its mempool holds fewer transactions than the committee committed in the last
  ``PENDING_TARGET_S`` seconds (at least ``PENDING_MIN_TXS``, about two full blocks), so an
  accepted order waits about that long, however starved the machine; beyond it an order is
  refused ``full`` (:attr:`LedgerReason.MEMPOOL_FULL`, never counted against the peer) before its
  signature is checked or anything is shared. Readings, cancels and model commitments are always
  offered to the mempool: one per household and slot at most, they are bounded by the community,
  not by the load, and a household does not re-send a refused reading (a bundle refused ``full``
  takes its reading down with it: the household then sends that reading alone at once). A re-sent transaction is
  looked up by its id (SHA-256 of its bytes) before it is decoded and answered OK at once when
  the node holds it. Transactions other validators share are always taken (up to the mempool's
  hard capacity): every validator holds every accepted transaction, so a household's nonces stay
  in order whoever proposes. Overload therefore costs a refusal per order, not an admitted
  backlog that makes every block bigger, every mempool re-check longer and every height slower.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from gridnode.clock import NodeClock
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import SignedBundle, SignedOrder, Tx, decode_tx, tx_id
from gridnode.daemon.gossip import OrderGossip
from gridnode.net.host import NetHost
from gridnode.node import NodeRuntime
from gridnode.status import SubmitResult
from gridnode.txbatch import decode_tx_batch, decode_tx_results, encode_tx_batch, encode_tx_results
from market.errors import (
    InvalidInput,
    LedgerReason,
    NetworkError,
    PeerMisbehaviour,
    Rejected,
    UsageError,
    WireReason,
    is_misbehaviour,
    reason_of,
)

__all__ = ["PENDING_MIN_TXS", "PENDING_TARGET_S", "Backpressure", "Submissions"]

#: a validator takes orders while its mempool holds fewer than what the committee committed
#: in this many seconds (measured over the last ``_RATE_WINDOW_S``) ...
PENDING_TARGET_S = 2.0
#: ... and never fewer than this many (about two full blocks of orders: one being decided while the
#: next gathers; and a slot's burst)
PENDING_MIN_TXS = 2_000
_RATE_WINDOW_S = 10.0


class Backpressure:
    """How many pending transactions a validator takes orders up to (see the module rules):
    ``PENDING_TARGET_S`` seconds of the committee's recent commit rate, at least ``min_txs``."""

    def __init__(
        self, *, target_s: float = PENDING_TARGET_S, min_txs: int = PENDING_MIN_TXS
    ) -> None:
        self.target_s = target_s
        self.min_txs = min_txs
        self._commits: deque[tuple[float, int]] = deque()  # (wall seconds, transactions)
        self._window_txs = 0

    def on_commit(self, txs: int, now_s: float) -> None:
        """A block of ``txs`` transactions was committed at ``now_s`` (monotonic seconds)."""
        self._commits.append((now_s, txs))
        self._window_txs += txs
        while self._commits and self._commits[0][0] < now_s - _RATE_WINDOW_S:
            self._window_txs -= self._commits.popleft()[1]

    @property
    def limit(self) -> int:
        """The pending transactions up to which orders are taken."""
        rate = self._window_txs / _RATE_WINDOW_S
        return max(self.min_txs, int(rate * self.target_s))


class Submissions:
    """Both sides of transaction submission for one node (see the module rules)."""

    def __init__(
        self,
        *,
        runtime: NodeRuntime,
        net: NetHost,
        key: KeyPair,
        clock: NodeClock,
        validator_peers: Mapping[str, str],
        gossip: OrderGossip,
        publish: Callable[[], None],
        changed: Callable[[], None],
    ) -> None:
        self._runtime = runtime
        self._net = net
        self._me = key.public_hex
        self._clock = clock
        self._validator_peers = validator_peers
        self._gossip = gossip
        self._publish = publish  # now: the caller (API, household) reads the snapshot next
        self._changed = changed  # soon: peers' submissions, hundreds a second
        #: told of every transaction this node sends (commit latency) and of every submission
        #: no validator acknowledged (the health badge); the status board sets both
        self.on_send: Callable[[Sequence[Tx]], None] = lambda txs: None
        self.on_unacknowledged: Callable[[], None] = lambda: None
        self.backpressure = Backpressure()

    def register(self) -> None:
        """Serve the submit protocols on the host."""
        self._net.on_message("tx", self._on_shared_tx)
        self._net.on_request("submit", self._on_submit)
        self._net.on_request("submit-batch", self._on_submit_batch)

    # ------------------------------------------------------------------ server
    def accept(self, tx: Tx, *, share: bool) -> SubmitResult:
        """Offer ``tx`` to this validator's mempool — an order only while the mempool holds fewer
        than the back-pressure limit (else refused ``full``); an accepted one is shared and
        gossiped."""
        pool = self._runtime.app.mempool
        if (
            (isinstance(tx, SignedOrder) or (isinstance(tx, SignedBundle) and tx.orders))
            and len(pool) >= self.backpressure.limit
            and not pool.knows(tx.id)
        ):
            return SubmitResult(False, tx.id.hex(), LedgerReason.MEMPOOL_FULL.value)
        result = self._runtime.submit(tx, self._clock.now_ms())
        tid = result.tx_id.hex()
        if result.accepted and share:
            for v, peer in self._validator_peers.items():
                if v != self._me:
                    with contextlib.suppress(UsageError, NetworkError):
                        self._net.send_soon(peer, "tx", [tx.encode()])
            if isinstance(tx, SignedOrder) or (isinstance(tx, SignedBundle) and tx.orders):
                self._gossip.queue(tx)
        reason = reason_of(result.reason) if result.reason else None
        accepted = result.accepted or reason is LedgerReason.DUPLICATE
        return SubmitResult(accepted, tid, reason or "")

    async def _on_submit(self, peer_id: str, body: bytes) -> bytes:
        """``submit``: one transaction; OK with its id, or REJECTED with the bare reason code."""
        if self._runtime.is_validator:  # a re-send: answered before decoding (module rules)
            tid = hashlib.sha256(body).digest()
            if self._runtime.app.mempool.knows(tid):
                return tid
        tx = decode_tx(body)
        if not self._runtime.is_validator:
            raise InvalidInput(reason=LedgerReason.NOT_A_VALIDATOR, subject="submit")
        result = self.accept(tx, share=True)
        self._changed()
        if not result.accepted:
            raise InvalidInput(reason=result.reason, subject=f"tx {result.tx_id[:16]}")
        return bytes.fromhex(result.tx_id)

    async def _on_submit_batch(self, peer_id: str, body: bytes) -> bytes:
        """A household's transactions of a slot in one request: one result per transaction."""
        txs = decode_tx_batch(body, max_bytes=self._net.config.max_frame_bytes)
        if not self._runtime.is_validator:
            raise InvalidInput(reason=LedgerReason.NOT_A_VALIDATOR, subject="submit-batch")
        results = [self.accept(tx, share=True) for tx in txs]
        self._changed()
        faults = {r.reason for r in results if not r.accepted and is_misbehaviour(r.reason)}
        for reason in sorted(faults):
            cause = InvalidInput(reason=reason, subject=f"submit-batch of {len(txs)}")
            self._net.report_misbehaviour(PeerMisbehaviour(peer_id, cause))
        return encode_tx_results(
            [(bytes.fromhex(r.tx_id), None if r.accepted else reason_of(r.reason)) for r in results]
        )

    def _on_shared_tx(self, peer_id: str, body: bytes) -> None:
        """``tx``: a transaction another validator accepted (mempool sharing)."""
        if not self._runtime.is_validator:
            return
        if peer_id not in self._validator_peers.values():
            raise InvalidInput(
                reason=WireReason.NOT_PERMITTED, subject="tx", expected="a validator"
            )
        if self._runtime.app.mempool.knows(hashlib.sha256(body).digest()):
            return  # held already: nothing to decode
        tx = decode_tx(body)
        result = self._runtime.submit(tx, self._clock.now_ms())
        if not result.accepted and is_misbehaviour(result.reason):
            raise InvalidInput(reason=result.reason, subject=f"shared tx {tx.id.hex()[:16]}")

    # ------------------------------------------------------------------ client
    async def submit(self, tx: Tx) -> SubmitResult:
        """Submit one transaction (``…/submit/1.0.0``; a validator's own mempool directly)."""
        self.on_send([tx])
        if self._runtime.is_validator:
            result = self.accept(tx, share=True)
            self._publish()
            return result
        tid = tx_id(tx).hex()
        try:
            _, _ = await self._net.submit(self._peers(), "submit", tx.encode())
        except Rejected as exc:  # the validator refused it; its answer is the reason code
            return SubmitResult(False, tid, exc.reason)
        except NetworkError:
            self.on_unacknowledged()
            raise
        return SubmitResult(True, tid)

    def _peers(self) -> list[str]:
        peers = [p for v, p in self._validator_peers.items() if v != self._me]
        connected = set(self._net.connected_peers())
        peers.sort(key=lambda p: p not in connected)  # connected validators first
        return peers

    async def submit_batch(self, txs: Sequence[Tx]) -> list[SubmitResult]:
        """Submit ``txs`` in one acknowledged request (``…/submit-batch/1.0.0``): one result per
        transaction, in order. :class:`NetworkError` when no validator answered."""
        self.on_send(txs)
        if self._runtime.is_validator:
            results = [self.accept(tx, share=True) for tx in txs]
            self._publish()
            return results
        try:
            peer, answer = await self._net.submit(
                self._peers(), "submit-batch", encode_tx_batch(txs)
            )
        except Rejected as exc:  # the whole batch was refused (e.g. not talking to a validator)
            return [SubmitResult(False, tx_id(tx).hex(), exc.reason) for tx in txs]
        except NetworkError:
            self.on_unacknowledged()
            raise
        try:
            rows = decode_tx_results(answer, expected=len(txs))
        except InvalidInput as exc:
            raise NetworkError(f"validator {peer} answered a batch with {exc}") from exc
        if [tid for tid, _ in rows] != [tx_id(tx) for tx in txs]:
            raise NetworkError(f"validator {peer} answered a batch for other transactions")
        return [SubmitResult(reason is None, tid.hex(), reason or "") for tid, reason in rows]
