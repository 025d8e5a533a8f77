"""The commands end to end on real files: export a node's chain, audit it, explain a slot and an
order, cut a bill proof and verify it; a simulation's chain audits to the run's own head and root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gridnode.cli import main
from gridnode.config import create_data_dir, write_genesis
from gridnode.core.consensus_messages import block_hash
from gridnode.store import Durability, NodeStore
from tests.audit.helpers import SLOT, SmallChain, small_chain

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chain() -> SmallChain:
    return small_chain()


def _node_dir(chain: SmallChain, tmp_path: Path) -> Path:
    g = tmp_path / "genesis.toml"
    write_genesis(g, chain.community.genesis)
    d = tmp_path / "node"
    create_data_dir(d, genesis=g)
    with NodeStore.open(d / "data" / "node.sqlite", durability=Durability.NORMAL) as store:
        for height, block, commit in chain.chain:
            store.put_block(height, block_hash(block), block, commit)
    return d


@pytest.fixture
def node(chain: SmallChain, tmp_path: Path) -> Path:
    return _node_dir(chain, tmp_path)


def test_export_info_audit_explain_prove_verify(
    chain: SmallChain, node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "chain.gnc"
    assert main(["chain", "export", "--dir", str(node), "--out", str(out)]) == 0
    assert "9 blocks" in capsys.readouterr().out
    assert main(["chain", "info", str(out)]) == 0
    assert "sha256" in capsys.readouterr().out
    g = str(node / "genesis.toml")
    assert main(["audit", str(out), "--genesis", g, "--quiet", "--jobs", "1"]) == 0
    assert "AUDIT PASSED" in capsys.readouterr().out
    assert main(["audit", str(node), "--quiet", "--jobs", "1"]) == 0  # the directory itself
    assert "AUDIT PASSED" in capsys.readouterr().out

    assert main(["explain", str(out), "--slot", str(SLOT), "--json", "--jobs", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    cleared, settled = doc["cleared"], doc["settled"]
    assert cleared["volume_wh"] == sum(t["energy_wh"] for t in cleared["trades"]) > 0
    assert cleared["supply"] and cleared["demand"]
    assert [s["cumulative_wh"] for s in cleared["supply"]] == sorted(
        s["cumulative_wh"] for s in cleared["supply"]
    )
    silent = [x for x in settled["lines"] if x["reading_missing_settled_as_0_wh"]]
    assert [x["household"] for x in silent] == [chain.community.members[0].public_hex]
    assert main(["explain", str(out), "--slot", str(SLOT), "--jobs", "1"]) == 0
    text = capsys.readouterr().out
    assert "supply curve" in text and "no reading: 0 Wh" in text
    # m0's first order was replaced (same slot, higher nonce): not in the book at gate closure
    first = chain.txs["o0"].order.order_id  # type: ignore[union-attr]
    assert main(["explain", str(out), "--order", first, "--json", "--jobs", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["found"] and doc["in_book_at_gate_closure"] is None and not doc["trades"]
    assert set(doc["not_on_ledger"]) >= {"forecast", "policy"}
    assert doc["model"]["kind"] == "local"  # an order naming no community model
    replacing = chain.txs["o0b"].order.order_id  # type: ignore[union-attr]
    assert main(["explain", str(out), "--order", replacing, "--jobs", "1"]) == 0
    text = capsys.readouterr().out
    assert "in the book" in text
    assert f"placed by gn.tx.order {chain.txs['o0b'].id.hex()[:16]}" in text

    m1 = chain.community.members[1].public_hex
    proof = tmp_path / "bill.proof"
    assert main(["chain", "prove", str(out), "--household", m1, "--slot", str(SLOT), "--out",
                 str(proof)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["verify-bill", str(proof), "--genesis", g, "--json"]) == 0
    bill = json.loads(capsys.readouterr().out)
    assert bill["slots"][0]["slot"] == SLOT and bill["slots"][0]["bill"] is not None
    assert bill["balance_micro"] == chain.states[bill["height"]].balances[m1]
    data = bytearray(proof.read_bytes())
    data[len(data) // 2] ^= 0x40
    proof.write_bytes(bytes(data))
    assert main(["verify-bill", str(proof), "--genesis", g]) == 1
    assert "NOT VERIFIED" in capsys.readouterr().err


def test_bad_arguments_are_one_line_and_exit_2(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chain", "export", "--out", str(tmp_path / "x")]) == 2
    assert main(["chain", "export", "--dir", str(node), "--out", str(tmp_path / "no" / "x")]) == 2
    assert (
        main(["verify-bill", str(tmp_path / "none"), "--genesis", str(node / "genesis.toml")]) == 2
    )
    assert main(["chain", "prove", str(node), "--household", "ab" * 32, "--slot", "1",
                 "--out", str(tmp_path / "p")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 4 and "not a member" in err


def test_a_simulations_chain_audits_to_the_runs_head_and_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, c = tmp_path / "run", tmp_path / "run" / "chain.gnc"
    scenario = str(ROOT / "sims" / "scenarios" / "small.toml")
    assert main(["sim", scenario, "--households", "4", "--days", "0.05", "--out", str(out),
                 "--chain", str(c)]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    code = main(["audit", str(c), "--quiet", "--jobs", "2", "--expect-head", results["head_hash"],
                 "--expect-root", results["state_digest"]])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "expected head id" in printed and "expected state root" in printed


def test_explain_prints_which_transaction_placed_each_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``placed_by`` of the JSON, in the printout: an order a bundle placed names the bundle."""
    from gridnode.core.ledger import SignedBundle, decode_block

    bundled = small_chain(bundled=True)
    node = _node_dir(bundled, tmp_path)
    bundle = next(
        tx
        for _, block, _ in bundled.chain
        for tx in decode_block(block).txs
        if isinstance(tx, SignedBundle) and tx.orders
    )
    (order,) = bundle.orders
    assert main(["explain", str(node), "--order", order.order_id, "--json", "--jobs", "1"]) == 0
    (version,) = json.loads(capsys.readouterr().out)["versions"]
    assert version["placed_by"] == "bundle"
    assert main(["explain", str(node), "--order", order.order_id, "--jobs", "1"]) == 0
    text = capsys.readouterr().out
    assert f"nonce {order.nonce}" in text
    assert f"placed by gn.tx.bundle {bundle.id.hex()[:16]}" in text
    assert "gn.tx.order" not in text
