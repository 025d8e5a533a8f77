"""The replicated ledger: genesis, signed transactions, state, blocks, and the pure ``check``/``apply`` rules.

Every node keeps this state and re-derives it from the blocks alone; consensus only agrees on the
blocks. The package is split along its seams, each module opening with its own rules:

* :mod:`.genesis` — the community's parameters (:class:`Genesis`) and the shared constants;
* :mod:`.transactions` — signed orders, cancels, readings and bundles (a reading and orders signed once): signing, ids, strict decoding;
* :mod:`.state` — :class:`LedgerState` and its canonical encoding (snapshots);
* :mod:`.stateroot` — the state root: a Merkle commitment to the state (``docs/merkle.md``);
* :mod:`.blocks` — :class:`Block`, its header (which commits to the transactions) and strict
  decoding;
* :mod:`.rules` — admission, :func:`check`/:func:`apply`, clearing and settlement inside apply,
  what a block cleared and settled (:func:`apply_with_outcome`);
* :mod:`.proofs` — bill proofs: a household's account and slots against a commit certificate.

This module re-exports their public names: ``gridnode.core.ledger`` is the one import the rest of the
tree uses.
"""

from __future__ import annotations

from gridnode.core.ledger.blocks import MAX_BLOCK_BYTES, Block, decode_block
from gridnode.core.ledger.genesis import FORMAT, MAX_CLOCK_SPEEDUP, ZERO_HASH, Genesis
from gridnode.core.ledger.rules import (
    READING_REFUSALS,
    BlockOutcome,
    SlotCleared,
    SlotSettled,
    admission_error,
    admit,
    apply,
    apply_with_outcome,
    build_block,
    check,
    read_by_every_member,
    settle_slot,
)
from gridnode.core.ledger.state import (
    CommittedModel,
    HouseholdTotals,
    LedgerState,
    decode_state,
    genesis_state,
)
from gridnode.core.ledger.transactions import (
    MAX_TX_BYTES,
    MODEL_VALIDATION_FIELDS,
    BundledOrder,
    BundleReading,
    OpenOrder,
    SignedBundle,
    SignedCancel,
    SignedModel,
    SignedOrder,
    SignedReading,
    Tx,
    decode_tx,
    sign_bundle,
    sign_cancel,
    sign_model,
    sign_order,
    sign_reading,
    tx_id,
    verify_signature,
)

__all__ = [
    "FORMAT",
    "MAX_BLOCK_BYTES",
    "MAX_CLOCK_SPEEDUP",
    "MAX_TX_BYTES",
    "MODEL_VALIDATION_FIELDS",
    "READING_REFUSALS",
    "ZERO_HASH",
    "Block",
    "BlockOutcome",
    "BundleReading",
    "BundledOrder",
    "CommittedModel",
    "Genesis",
    "HouseholdTotals",
    "LedgerState",
    "OpenOrder",
    "SignedBundle",
    "SignedCancel",
    "SignedModel",
    "SignedOrder",
    "SignedReading",
    "SlotCleared",
    "SlotSettled",
    "Tx",
    "admission_error",
    "admit",
    "apply",
    "apply_with_outcome",
    "build_block",
    "check",
    "decode_block",
    "decode_state",
    "decode_tx",
    "genesis_state",
    "read_by_every_member",
    "settle_slot",
    "sign_bundle",
    "sign_cancel",
    "sign_model",
    "sign_order",
    "sign_reading",
    "tx_id",
    "verify_signature",
]
