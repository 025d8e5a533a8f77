"""Tampering with an exported chain or a bill proof is caught, and the audit names what broke.

Every case below changes a small honest chain (tests/audit/helpers.py) as an attacker could: one
byte anywhere, a block dropped or reordered, a forged or short certificate, a block the validators
certified although it breaks a rule, an altered balance in a bill proof."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from gridnode.audit import Discrepancy, open_chain, run_audit
from gridnode.chain import ChainError
from gridnode.core.consensus_messages import (
    Commit,
    CommitSig,
    VoteType,
    block_hash,
    decode_commit,
    encode_commit,
    sign_vote,
)
from gridnode.core.crypto import KeyPair
from gridnode.core.ledger import Block, decode_block, sign_reading
from gridnode.core.ledger.proofs import make_bill_proof, verify_bill_proof
from market.codec import pack, unpack
from market.errors import ChainReason, InvalidInput, LedgerReason, UsageError
from tests.audit.helpers import SmallChain, export, small_chain
from tests.chain.helpers import commit_for


@pytest.fixture(scope="module")
def chain() -> SmallChain:
    return small_chain()


def _audit(path: Path) -> Discrepancy | None:
    """The audit's first discrepancy (``step`` "open": the export's header record is broken)."""
    try:
        src = open_chain(path)
    except ChainError as exc:
        return Discrepancy(exc.height, "open", exc.reason.value, str(exc))
    except UsageError as exc:  # the magic bytes: not an export at all
        return Discrepancy(0, "open", "", str(exc))
    result = run_audit(src, jobs=1)
    assert result.discrepancy is not None or result.ok
    return result.discrepancy


FILE_STEPS = {"bad_file", "truncated", "checksum_mismatch", "open"}
CHAIN_STEPS = {"bad_commit", "bad_block", "broken_rule", "wrong_height"}


def test_one_flipped_byte_anywhere_is_caught_and_named(chain: SmallChain, tmp_path: Path) -> None:
    honest = export(chain.chain, tmp_path / "honest.gnc", chain.community.genesis, per_record=3)
    data = honest.read_bytes()
    rng = random.Random(15)
    # the magic, the header record, the end record, and a seeded sample of every region between
    positions = sorted(
        {*range(0, 40), *range(len(data) - 90, len(data)), *rng.sample(range(len(data)), 160)}
    )
    steps: dict[str, int] = {}
    for i in positions:
        bad = tmp_path / "bad.gnc"
        bad.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :])
        d = _audit(bad)
        assert d is not None, f"byte {i} flipped and the audit passed"
        assert d.step in FILE_STEPS | CHAIN_STEPS, (i, d)
        steps[d.step] = steps.get(d.step, 0) + 1
    # the certificates and the file's checksum both did their part
    assert steps.get("bad_commit", 0) > 0 and steps.get("checksum_mismatch", 0) > 0, steps


def test_a_dropped_block_is_named(chain: SmallChain, tmp_path: Path) -> None:
    dropped = [c for c in chain.chain if c[0] != 4]
    d = _audit(export(dropped, tmp_path / "d.gnc", chain.community.genesis))
    assert d is not None and (d.step, d.height) == (
        "bad_file",
        4,
    )
    # renumbered so the file's heights run on: the commit of block 5 does not prove height 4
    renumbered = [(i + 1, b, c) for i, (_, b, c) in enumerate(dropped)]
    d = _audit(export(renumbered, tmp_path / "r.gnc", chain.community.genesis))
    assert d is not None
    assert (d.step, d.rule, d.height) == (
        "bad_commit",
        "wrong_height",
        4,
    )


def test_reordered_blocks_are_named(chain: SmallChain, tmp_path: Path) -> None:
    c = list(chain.chain)
    c[2], c[3] = c[3], c[2]
    d = _audit(export(c, tmp_path / "o.gnc", chain.community.genesis))
    assert d is not None and (d.step, d.height) == (
        "bad_file",
        3,
    )
    swapped = [(i + 1, b, cm) for i, (_, b, cm) in enumerate(c)]
    d = _audit(export(swapped, tmp_path / "s.gnc", chain.community.genesis))
    assert d is not None
    assert (d.step, d.rule, d.height) == (
        "bad_commit",
        "wrong_height",
        3,
    )


def _with_commit(chain: SmallChain, height: int, commit: bytes) -> list[tuple[int, bytes, bytes]]:
    return [(h, b, commit if h == height else c) for h, b, c in chain.chain]


def test_a_forged_certificate_is_named(chain: SmallChain, tmp_path: Path) -> None:
    g = chain.community.genesis
    h, block, commit = chain.chain[4]
    real = decode_commit(commit)
    outsiders = [KeyPair.from_rng(random.Random(99 + i)) for i in range(4)]
    cases = {
        # signed by keys that are not the genesis validators
        "bad_signature": encode_commit(decode_commit(commit_for(outsiders, h, block))),
        # only 2 of 4 validators (a quorum is 3)
        "no_quorum": encode_commit(replace(real, signatures=real.signatures[:2])),
        # a real signature presented twice for two validators: not in increasing order
        "unordered_signatures": encode_commit(
            replace(real, signatures=(real.signatures[1], real.signatures[1], real.signatures[2]))
        ),
        # a real commit of another block
        "wrong_block_hash": encode_commit(replace(decode_commit(chain.chain[3][2]), height=h)),
    }
    for rule, forged in cases.items():
        d = _audit(export(_with_commit(chain, h, forged), tmp_path / f"{rule}.gnc", g))
        assert d is not None and (d.step, d.rule, d.height) == ("bad_commit", rule, h), (rule, d)


def test_a_certified_block_that_breaks_a_rule_is_named_with_its_transaction(
    chain: SmallChain, tmp_path: Path
) -> None:
    """Even the whole committee signing cannot make a bad block pass: a reading forged for m3
    (signed by m2's key) in block 5, re-certified by every validator."""
    c = chain.community
    h, data, _ = chain.chain[4]
    block = decode_block(data)
    forged = replace(
        sign_reading(c.members[2], c.genesis, slot=block.txs[0].slot, net_wh=999),  # type: ignore[union-attr]
        household=c.members[3].public_hex,
    )
    txs = (*block.txs[:2], forged, *block.txs[3:])
    bad = Block(block.height, block.prev_hash, block.time_ms, block.proposer, txs, block.state_root)
    raw = bad.encode()
    tampered = [(hh, raw, commit_for(c.validators, h, raw)) if hh == h else (hh, b, cm)
                for hh, b, cm in chain.chain]  # fmt: skip
    d = _audit(export(tampered, tmp_path / "rule.gnc", c.genesis))
    assert d is not None
    assert (d.step, d.height, d.tx_index, d.household) == (
        "broken_rule",
        h,
        2,
        c.members[3].public_hex,
    )
    assert d.rule in ("bad_signature", "duplicate_reading"), d
    # a block whose state root lies, certified: wrong_state_root
    lie = Block(
        block.height, block.prev_hash, block.time_ms, block.proposer, block.txs, b"\x07" * 32
    )
    raw = lie.encode()
    tampered = [(hh, raw, commit_for(c.validators, h, raw)) if hh == h else (hh, b, cm)
                for hh, b, cm in chain.chain]  # fmt: skip
    d = _audit(export(tampered, tmp_path / "root.gnc", c.genesis))
    assert d is not None
    assert (d.step, d.rule, d.height) == (
        "broken_rule",
        LedgerReason.WRONG_STATE_ROOT.value,
        h,
    )


def test_transactions_swapped_under_a_header_are_named(chain: SmallChain, tmp_path: Path) -> None:
    """The same header (so the same id and a valid commit) over other transactions."""
    c = chain.community
    h, data, commit = chain.chain[0]
    items = unpack(data, what="block", max_bytes=1 << 22)
    items[3] = items[3][1:]  # one transaction fewer
    swapped = [(h, pack(items), commit), *chain.chain[1:]]
    d = _audit(export(swapped, tmp_path / "txs.gnc", c.genesis))
    assert d is not None and (d.step, d.rule, d.height) == ("bad_block", "wrong_txs_root", h)
    assert block_hash(pack(items)) == block_hash(data)  # the commit alone could not tell


# ------------------------------------------------------------------------------- bill proofs


@pytest.fixture(scope="module")
def proof(chain: SmallChain) -> bytes:
    _, data, commit = chain.chain[5]  # height 6 settled slot 2 for everyone
    m1 = chain.community.members[1].public_hex
    return make_bill_proof(chain.states[6], decode_block(data).header.raw, commit, m1)


def test_an_honest_proof_verifies(chain: SmallChain, proof: bytes) -> None:
    bill = verify_bill_proof(chain.community.genesis, proof)
    state = chain.states[6]
    m1 = chain.community.members[1].public_hex
    assert bill.balance_micro == state.balances[m1] and bill.height == 6
    settled = [s for s in bill.slots if s.phase == "settled"]
    assert settled and settled[0].bill is not None
    assert settled[0].bill["bill_micro"] == state.settled[settled[0].slot].bills[m1].bill_micro


def test_an_altered_balance_in_a_proof_is_named(chain: SmallChain, proof: bytes) -> None:
    value = unpack(proof, what="proof", max_bytes=1 << 20)
    account = unpack(value[7][0], what="account", max_bytes=1 << 20)
    account[4] += 1_000_000  # a bigger balance
    value[7][0] = pack(account)
    with pytest.raises(InvalidInput) as exc:
        verify_bill_proof(chain.community.genesis, pack(value))
    assert (exc.value.reason, exc.value.field) == (ChainReason.BAD_PROOF, "account path")
    # an altered bill line in a slot
    value = unpack(proof, what="proof", max_bytes=1 << 20)
    member = unpack(value[8][-1][3], what="member", max_bytes=1 << 20)
    member[7][13] -= 1  # bill_micro
    value[8][-1][3] = pack(member)
    with pytest.raises(InvalidInput) as exc:
        verify_bill_proof(chain.community.genesis, pack(value))
    assert (exc.value.reason, exc.value.field) == (ChainReason.BAD_PROOF, "member path")


def test_any_altered_byte_of_a_proof_fails(chain: SmallChain, proof: bytes) -> None:
    g = chain.community.genesis
    for i in range(len(proof)):
        bad = proof[:i] + bytes([proof[i] ^ 0x01]) + proof[i + 1 :]
        with pytest.raises(InvalidInput) as exc:
            verify_bill_proof(g, bad)
        assert exc.value.reason in (
            ChainReason.BAD_PROOF,
            ChainReason.BAD_COMMIT,
            ChainReason.WRONG_LEAF,
            LedgerReason.WRONG_GENESIS,
            LedgerReason.NOT_A_MEMBER,
        ), (i, exc.value)


def test_a_proof_of_another_community_or_a_forged_commit_fails(
    chain: SmallChain, proof: bytes
) -> None:
    other = small_chain(seed=4).community.genesis
    with pytest.raises(InvalidInput) as exc:
        verify_bill_proof(other, proof)
    assert exc.value.reason is LedgerReason.WRONG_GENESIS
    value = unpack(proof, what="proof", max_bytes=1 << 20)
    header = value[4]
    outsiders = [KeyPair.from_rng(random.Random(7 + i)) for i in range(4)]
    votes = [
        sign_vote(k, vote_type=VoteType.PRECOMMIT, height=6, round_=0, value=block_hash(header),
                  validator=i)
        for i, k in enumerate(outsiders)
    ]  # fmt: skip
    value[5] = encode_commit(
        Commit(6, 0, block_hash(header), tuple(CommitSig(v.validator, v.signature) for v in votes))
    )
    with pytest.raises(InvalidInput) as exc:
        verify_bill_proof(chain.community.genesis, pack(value))
    assert exc.value.reason is ChainReason.BAD_COMMIT
