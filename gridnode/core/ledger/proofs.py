"""Bill proofs: one household's account and slots at a height, checkable from a commit certificate
and the genesis alone (a light client, in the spirit of CometBFT's: signatures, then Merkle paths).

``docs/merkle.md`` ("Bill proofs") is the specification. Rules of this module:

* A proof is the canonical msgpack array ``["gn.billproof", 1, genesis_hash, household, header,
  commit, root_record, [account_entry, account_path], [[slot_index, slot_entry, slot_path,
  member_entry, member_path], …]]``: the block header of the height (bytes), the commit
  certificate for it (``encode_commit`` bytes), the state root's record, the household's
  accounts-tree entry with its audit path, and for each slot proven the slots-tree entry with its
  path and the household's members-tree entry with its path (paths: arrays of 32-byte hashes).
* :func:`verify_bill_proof` checks, in this order, naming the first step that fails:
  the genesis (``wrong_genesis``), membership (``not_a_member``), the commit — precommits of more
  than 2/3 of the genesis validators for the header's id at its height (``bad_commit``) —, the
  root record's hash against the header's ``state_root`` and its genesis and height
  (``bad_proof``), every audit path against its tree's root and size (``bad_proof``; sizes come
  from the genesis and the root record, never from the proof), and that each entry is the asked
  household's and slot's (``wrong_leaf``). An empty members-tree entry proves that the household
  had nothing in that slot. It answers a :class:`ProvenBill` of plain values, or raises
  :class:`~market.errors.InvalidInput`.
* :class:`BillProver` (and :func:`make_bill_proof`) cuts proofs from a state and the header and
  commit of its height; it computes the trees once, without the state's memo (so it never
  disturbs a running node's) — a few milliseconds for a thousand households.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from gridnode.core.consensus_messages import ValidatorSet, decode_commit, verify_commit
from gridnode.core.ledger.blocks import decode_header
from gridnode.core.ledger.genesis import Genesis
from gridnode.core.ledger.state import LedgerState
from gridnode.core.ledger.stateroot import (
    BILL_FIELDS,
    PHASE_CLEARED,
    PHASE_OPEN,
    PHASE_SETTLED,
    StateTree,
    account_entry,
    slot_leaf_entry,
)
from gridnode.core.merkle import inclusion_path, leaf_hash, verify_inclusion
from market.codec import pack, unpack
from market.errors import ChainReason, InvalidInput, LedgerReason, Reason, UsageError

__all__ = [
    "BillProver",
    "ProvenBill",
    "ProvenSlot",
    "ProvenTrade",
    "make_bill_proof",
    "slots_of",
    "verify_bill_proof",
]

VERSION: Final = 1
MAX_PROOF_BYTES: Final = 1 << 20
PHASES: Final = {PHASE_OPEN: "open", PHASE_CLEARED: "cleared", PHASE_SETTLED: "settled"}
_TOTALS: Final = (
    "bought_p2p_wh",
    "sold_p2p_wh",
    "grid_import_wh",
    "grid_export_wh",
    "bill_micro",
    "grid_only_bill_micro",
    "slots_settled",
)


@dataclass(frozen=True, slots=True)
class ProvenTrade:
    """One of the household's trades in a proven slot."""

    bought: bool  # True: the household bought, False: it sold
    counterparty: str  # the other household's public key (hex)
    energy_wh: int
    price_micro_per_kwh: int
    amount_micro: int


@dataclass(frozen=True, slots=True)
class ProvenSlot:
    """What a proof shows of one slot for the household (plain values)."""

    slot: int
    phase: str  # open | cleared | settled (by the proven block)
    clearing_price_micro_per_kwh: int | None
    order: bytes | None  # the open order's canonical transaction bytes
    trades: tuple[ProvenTrade, ...]
    reading_wh: int | None
    bill: dict[str, int] | None  # BILL_FIELDS -> value, when the proven block settled the slot


@dataclass(frozen=True, slots=True)
class ProvenBill:
    """What a verified proof shows: the household's account at the height and its slots."""

    household: str
    height: int
    time_ms: int
    block_id: bytes
    state_root: bytes
    signers: tuple[int, ...]  # validator indices whose precommits verified
    nonce: int
    balance_micro: int
    totals: dict[str, int]
    slots: tuple[ProvenSlot, ...]


def slots_of(tree: StateTree, state: LedgerState, household: str) -> list[int]:
    """The live slots where ``household`` has an entry (order, trades, reading or bill)."""
    i = state.genesis.member_index[household]
    empty = leaf_hash(b"")
    return [s for s in tree.slots if tree.members[s].leaf(i) != empty]


class BillProver:
    """Cuts bill proofs from one state, whose block header and commit are given; the state's
    trees are computed once, without its memo (a running node's memo is never disturbed)."""

    def __init__(self, state: LedgerState, header: bytes, commit: bytes) -> None:
        self.state = replace(state, memo={})
        self.tree = self.state.tree()
        parsed = decode_header(header)
        if parsed.state_root != self.tree.root or parsed.height != state.height:
            raise UsageError("the header is not the one of this state's height")
        self.header, self.commit = header, commit
        self._slot_leaves = self.tree.slot_leaves()

    def proof(self, household: str, slots: Sequence[int] | None = None) -> bytes:
        """A proof of ``household``'s account and ``slots`` (default: every live slot where it
        has an entry)."""
        state, tree = self.state, self.tree
        genesis = state.genesis
        index = genesis.member_index.get(household)
        if index is None:
            raise UsageError(f"{household[:16]} is not a member of {genesis.community_id}")
        chosen = slots_of(tree, state, household) if slots is None else list(slots)
        out_slots = []
        for slot in chosen:
            if slot not in tree.members:
                raise UsageError(f"slot {slot} is not in the state at height {state.height}")
            k = tree.slots.index(slot)
            members = tree.members[slot]
            entry = _member_entry(state, slot, household)
            assert leaf_hash(entry) == members.leaf(index)
            out_slots.append(
                [
                    k,
                    tree.slot_entries[k],
                    inclusion_path(self._slot_leaves, k),
                    entry,
                    members.path(index),
                ]
            )
        account = _account_entry(state, household)
        assert leaf_hash(account) == tree.accounts.leaf(index)
        return pack(
            [
                "gn.billproof",
                VERSION,
                genesis.hash,
                household,
                self.header,
                self.commit,
                tree.record,
                [account, tree.accounts.path(index)],
                out_slots,
            ]
        )


def make_bill_proof(
    state: LedgerState,
    header: bytes,
    commit: bytes,
    household: str,
    slots: Sequence[int] | None = None,
) -> bytes:
    """A proof of ``household``'s account and ``slots`` (default: every live slot where it has an
    entry) in ``state``, whose block header and commit are ``header`` and ``commit``."""
    return BillProver(state, header, commit).proof(household, slots)


def _account_entry(state: LedgerState, household: str) -> bytes:
    t = state.totals.get(household)
    return account_entry(
        household,
        state.nonces.get(household, -1),
        state.balances.get(household, 0),
        None if t is None else tuple(getattr(t, f) for f in _TOTALS),
    )


def _member_entry(state: LedgerState, slot: int, household: str) -> bytes:
    done = state.settled.get(slot)
    trades = done.trades if done is not None else state.trades.get(slot, ())
    readings = done.readings if done is not None else state.readings.get(slot, {})
    orders = {} if done is not None else state.orders.get(slot, {})
    return slot_leaf_entry(
        slot,
        household,
        orders.get(household),
        [t for t in trades if household in (t.buyer, t.seller)],
        readings.get(household),
        None if done is None else done.bills.get(household),
        state.genesis.member_index,
    )


# ------------------------------------------------------------------------------------ verifying


def _fail(reason: Reason, step: str, expected: str = "", found: str = "") -> InvalidInput:
    return InvalidInput(
        reason=reason, subject="bill proof", field=step, expected=expected, found=found
    )


def _arr(value: Any, n: int, step: str) -> list[Any]:
    if not isinstance(value, list) or len(value) != n:
        raise _fail(ChainReason.BAD_PROOF, step, f"an array of {n}")
    return value


def _path(value: Any, step: str) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(p, bytes) and len(p) == 32 for p in value):
        raise _fail(ChainReason.BAD_PROOF, step, "an array of 32-byte hashes")
    return value


def _entry(data: Any, tag: str, n: int, step: str) -> list[Any]:
    if not isinstance(data, bytes):
        raise _fail(ChainReason.BAD_PROOF, step, "bytes")
    try:
        value = unpack(data, what=step, max_bytes=MAX_PROOF_BYTES)
    except InvalidInput as exc:
        raise _fail(ChainReason.BAD_PROOF, step, f"a canonical {tag}", str(exc)) from exc
    if not isinstance(value, list) or len(value) != n or value[:2] != [tag, VERSION]:
        raise _fail(ChainReason.BAD_PROOF, step, f"[{tag!r}, 1, …] of {n}")
    return value


def _root_entry(record: bytes) -> list[Any]:
    """The root record: version 1 (15 items), or 2 (17: with the models tree) once a community
    model was committed (:mod:`.stateroot`)."""
    with contextlib.suppress(InvalidInput):
        value = unpack(record, what="root record", max_bytes=MAX_PROOF_BYTES)
        if isinstance(value, list) and len(value) == 17 and value[:2] == ["gn.stateroot", 2]:
            return value
    return _entry(record, "gn.stateroot", 15, "root record")


def verify_bill_proof(genesis: Genesis, data: bytes) -> ProvenBill:
    """Check a proof against ``genesis`` alone (see the module rules)."""
    try:
        value = unpack(data, what="bill proof", max_bytes=MAX_PROOF_BYTES)
    except InvalidInput as exc:
        raise _fail(ChainReason.BAD_PROOF, "encoding", "canonical msgpack", str(exc)) from exc
    tag, version, g_hash, household, header_bytes, commit_bytes, record, account, slots = _arr(
        value, 9, "proof"
    )
    if tag != "gn.billproof" or version != VERSION:
        raise _fail(ChainReason.BAD_PROOF, "proof", "['gn.billproof', 1, …]", repr(tag)[:30])
    if g_hash != genesis.hash:
        raise _fail(LedgerReason.WRONG_GENESIS, "genesis", genesis.hash.hex()[:16])
    index = genesis.member_index.get(household) if isinstance(household, str) else None
    if index is None:
        raise _fail(LedgerReason.NOT_A_MEMBER, "household", "a member", str(household)[:16])
    if not isinstance(header_bytes, bytes) or not isinstance(commit_bytes, bytes):
        raise _fail(ChainReason.BAD_PROOF, "header", "header and commit bytes")
    # 1. the commit certificate proves the header
    try:
        header = decode_header(header_bytes)
        commit = decode_commit(commit_bytes)
        validators = ValidatorSet(tuple(bytes.fromhex(v) for v in genesis.validators))
        verify_commit(validators, commit, header_bytes, height=header.height)
    except InvalidInput as exc:
        raise InvalidInput(
            reason=ChainReason.BAD_COMMIT,
            subject="bill proof",
            field="commit",
            expected="precommits of > 2/3 of the genesis validators for this header",
            found=str(exc),
        ) from exc
    # 2. the header's state root is the hash of the root record
    if not isinstance(record, bytes) or hashlib.sha256(record).digest() != header.state_root:
        raise _fail(ChainReason.BAD_PROOF, "root record", "the header's state_root")
    r = _root_entry(record)
    (_, _, r_genesis, r_height, _, _, _, _, _, n_members, a_root, n_slots, s_root) = r[:13]
    if r_genesis != genesis.hash or r_height != header.height or n_members != len(genesis.members):
        raise _fail(ChainReason.BAD_PROOF, "root record", "this genesis and height")
    if (
        not isinstance(n_slots, int)
        or not isinstance(a_root, bytes)
        or not isinstance(s_root, bytes)
    ):
        raise _fail(ChainReason.BAD_PROOF, "root record", "sizes and roots")
    # 3. the account
    a_entry, a_path = _arr(account, 2, "account")
    if not isinstance(a_entry, bytes) or not verify_inclusion(
        leaf_hash(a_entry), index, n_members, _path(a_path, "account path"), a_root
    ):
        raise _fail(ChainReason.BAD_PROOF, "account path", "a path to the accounts root")
    acc = _entry(a_entry, "gn.account", 12, "account")
    if acc[2] != household:
        raise _fail(ChainReason.WRONG_LEAF, "account", household[:16], str(acc[2])[:16])
    # 4. the slots
    if not isinstance(slots, list):
        raise _fail(ChainReason.BAD_PROOF, "slots", "an array")
    proven = []
    for item in slots:
        k, s_entry, s_path, m_entry, m_path = _arr(item, 5, "slot")
        if (
            not isinstance(k, int)
            or not isinstance(s_entry, bytes)
            or not verify_inclusion(
                leaf_hash(s_entry), k, n_slots, _path(s_path, "slot path"), s_root
            )
        ):
            raise _fail(ChainReason.BAD_PROOF, "slot path", "a path to the slots root")
        _, _, slot, phase, price, m_root = _entry(s_entry, "gn.slot", 6, "slot")
        if (
            not isinstance(m_root, bytes)
            or not isinstance(m_entry, bytes)
            or not verify_inclusion(
                leaf_hash(m_entry), index, n_members, _path(m_path, "member path"), m_root
            )
        ):
            raise _fail(
                ChainReason.BAD_PROOF, "member path", f"a path to slot {slot}'s members root"
            )
        proven.append(_slot(genesis, slot, phase, price, m_entry, household))
    return ProvenBill(
        household=household,
        height=header.height,
        time_ms=header.time_ms,
        block_id=header.id,
        state_root=header.state_root,
        signers=tuple(s.validator for s in commit.signatures),
        nonce=acc[3],
        balance_micro=acc[4],
        totals=dict(zip(_TOTALS, acc[5:], strict=True)),
        slots=tuple(proven),
    )


def _slot(  # noqa: PLR0917 - the slot entry's fields
    genesis: Genesis, slot: Any, phase: Any, price: Any, m_entry: bytes, household: str
) -> ProvenSlot:
    if phase not in PHASES:
        raise _fail(ChainReason.BAD_PROOF, "slot", "phase 0, 1 or 2", repr(phase))
    if m_entry == b"":
        return ProvenSlot(slot, PHASES[phase], price, None, (), None, None)
    _, _, m_slot, m_household, order, trades, reading, bill = _entry(
        m_entry, "gn.slotleaf", 8, "member"
    )
    if m_slot != slot or m_household != household:
        raise _fail(
            ChainReason.WRONG_LEAF,
            "member",
            f"slot {slot} of {household[:16]}",
            f"slot {m_slot} of {str(m_household)[:16]}",
        )
    try:
        proven = tuple(
            ProvenTrade(role == 0, genesis.members[other], wh, price_, amount)
            for role, other, wh, price_, amount in trades
        )
    except (TypeError, ValueError, IndexError):
        raise _fail(
            ChainReason.BAD_PROOF, "member", "trades [role, member, Wh, price, µ¤]"
        ) from None
    return ProvenSlot(
        slot,
        PHASES[phase],
        price,
        order,
        proven,
        reading,
        None if bill is None else dict(zip(BILL_FIELDS, bill, strict=True)),
    )
