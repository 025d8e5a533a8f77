"""The campaign's minimal replicated application: a log of signed opaque transactions.

Rules of this module:

* A :class:`SimTx` is ``body = pack(["gn.simtx", client, nonce, payload])`` signed by the client's
  key in the ``simtx`` domain; its id is the SHA-256 of the body.
* A block is ``pack(["gn.simblock", 1, height, time_ms, [[body, signature], …]])``. It is valid
  (:meth:`SimApp.block_error`) at the next height when its time is strictly later than the previous
  block's, every transaction's signature verifies and none was committed before; a fresh proposal
  (consensus passes ``now``) must also be within ``time_bound_ms`` of the validator's clock.
* The state (height, last time, committed ids) snapshots to canonical bytes and back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from gridnode.core.consensus import Backlog
from gridnode.core.crypto import KeyPair, verify
from gridnode.core.mempool import AddResult, Mempool
from market.codec import pack, unpack
from market.errors import InvalidInput

__all__ = ["TX_DOMAIN", "SimApp", "SimTx", "make_tx"]

TX_DOMAIN: Final = "simtx"


@dataclass(frozen=True, slots=True)
class SimTx:
    """A signed opaque transaction: ``body = pack(["gn.simtx", client, nonce, payload])``."""

    body: bytes
    signature: bytes

    @property
    def tx_id(self) -> bytes:
        return hashlib.sha256(self.body).digest()

    def encoded(self) -> list[bytes]:
        return [self.body, self.signature]


def make_tx(key: KeyPair, nonce: int, payload: bytes) -> SimTx:
    body = pack(["gn.simtx", key.public_key, nonce, payload])
    return SimTx(body, key.sign(TX_DOMAIN, body))


def _tx_ok(tx: SimTx) -> bool:
    try:
        tag, client, _nonce, _payload = unpack(tx.body, what="simtx")
    except (InvalidInput, ValueError):
        return False
    return (
        tag == "gn.simtx"
        and isinstance(client, bytes)
        and verify(client, TX_DOMAIN, tx.body, tx.signature)
    )


class SimApp:
    """A replicated log of signed transactions (see the module rules). Counts signature checks."""

    def __init__(
        self, *, time_bound_ms: int = 10_000, max_block_txs: int = 200, sig_counter: list[int]
    ) -> None:
        self.height = 0
        self.last_time = -(10**18)
        self.committed_ids: dict[bytes, int] = {}
        self.tx_count = 0
        self._bound = time_bound_ms
        self._max_txs = max_block_txs
        self._sigs = sig_counter
        self.mempool: Mempool[SimTx] = Mempool(
            tx_id=lambda t: t.tx_id, check=self._check_tx, size=lambda t: len(t.body) + 64
        )

    def submit(self, tx: SimTx, *, now_ms: int | None = None) -> AddResult:
        del now_ms
        return self.mempool.add(tx)

    def offer(self, tx: SimTx, *, now_ms: int | None = None) -> str | None:
        del now_ms
        return self.mempool.offer(tx)

    def backlog_full(self) -> bool:
        return len(self.mempool) >= self._max_txs

    def backlog(self) -> Backlog:
        """Pending transactions, and whether they fill a block (adaptive cadence); nothing here
        is due by time alone."""
        return Backlog(len(self.mempool), self.backlog_full())

    def block_tx_ids(self, block: bytes) -> list[bytes]:
        try:
            value = unpack(block, what="block", max_bytes=8 << 20)
            return [hashlib.sha256(bytes(item[0])).digest() for item in value[4]]
        except (InvalidInput, ValueError, TypeError, IndexError):
            return []

    def _check_tx(self, tx: SimTx) -> str | None:
        if tx.tx_id in self.committed_ids:
            return "committed"
        self._sigs[0] += 1
        return None if _tx_ok(tx) else "bad_signature"

    def make_block(self, height: int, round_: int, now: int) -> bytes:
        del round_
        txs = self.mempool.batch(max_count=self._max_txs, max_bytes=1 << 20)
        return pack(["gn.simblock", 1, height, now, [t.encoded() for t in txs]])

    def _parse(self, height: int, block: bytes) -> tuple[int, list[SimTx]]:
        what = f"block {height}"
        try:
            tag, version, h, t, txs = unpack(block, what=what, max_bytes=8 << 20)
        except ValueError as exc:
            raise InvalidInput(reason="malformed", subject=what) from exc
        if tag != "gn.simblock" or version != 1 or h != height or not isinstance(t, int):
            raise InvalidInput(reason="bad_header", subject=what)
        if height != self.height + 1:
            raise InvalidInput(
                reason="not_next", subject=what, expected=str(self.height + 1), found=str(height)
            )
        if t <= self.last_time:
            raise InvalidInput(reason="time_not_monotonic", subject=what)
        out: list[SimTx] = []
        seen: set[bytes] = set()
        for item in txs:
            if not (isinstance(item, list) and len(item) == 2):
                raise InvalidInput(reason="bad_tx", subject=what)
            tx = SimTx(bytes(item[0]), bytes(item[1]))
            tid = tx.tx_id
            if tid in seen or tid in self.committed_ids:
                raise InvalidInput(reason="replayed_tx", subject=what, found=tid.hex()[:16])
            seen.add(tid)
            self._sigs[0] += 1
            if not _tx_ok(tx):
                raise InvalidInput(reason="bad_tx_signature", subject=what)
            out.append(tx)
        return t, out

    def block_error(
        self, height: int, block: bytes, now: int | None, *, round_: int = 0
    ) -> InvalidInput | None:
        """Why ``block`` may not be committed; ``now`` given (a fresh proposal): the clock too, its
        old side one bound wider per round (as the ledger's rule)."""
        try:
            t, _ = self._parse(height, block)
        except InvalidInput as exc:
            return exc
        if (
            now is not None
            and not now - self._bound * (1 + max(0, round_)) <= t <= now + self._bound
        ):
            return InvalidInput(
                reason="time_too_old" if t < now else "time_in_future",
                subject=f"block {height}",
                expected=f"within {self._bound} ms of {now}",
                found=str(t),
            )
        return None

    def apply(self, height: int, block: bytes) -> None:
        """Apply a committed block; raises :class:`InvalidInput` if it breaks a rule."""
        t, txs = self._parse(height, block)
        self.height = height
        self.last_time = t
        for tx in txs:
            self.committed_ids[tx.tx_id] = height
        self.tx_count += len(txs)
        self.mempool.remove_committed(tx.tx_id for tx in txs)

    def snapshot(self) -> bytes:
        ids = sorted(self.committed_ids.items())
        return pack(["gn.simstate", 1, self.height, self.last_time, self.tx_count, ids])

    def restore(self, data: bytes) -> None:
        _tag, _version, height, last_time, tx_count, ids = unpack(data, what="sim state")
        self.height, self.last_time, self.tx_count = height, last_time, tx_count
        self.committed_ids = {bytes(tid): h for tid, h in ids}
