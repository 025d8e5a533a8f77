"""The audit of a small chain: it passes, its figures are the ledger's, it resumes, and a node
directory's own snapshot is compared; the CLI prints, writes its reports and exits 1 on a bad chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gridnode.audit import Progress, open_chain, run_audit
from gridnode.cli import main
from gridnode.config import create_data_dir, write_genesis
from gridnode.core.consensus_messages import block_hash
from gridnode.store import Durability, NodeStore
from market.settlement import GRID, POOL
from tests.audit.helpers import SmallChain, export, small_chain


@pytest.fixture(scope="module")
def chain() -> SmallChain:
    return small_chain()


def test_an_honest_chain_passes_with_the_ledgers_figures(chain: SmallChain, tmp_path: Path) -> None:
    path = export(chain.chain, tmp_path / "c.gnc", chain.community.genesis)
    for jobs in (1, 2):
        result = run_audit(open_chain(path), jobs=jobs)
        assert result.ok, result.discrepancy
        final = chain.states[-1]
        t = result.tally
        assert (t.first_height, t.last_height, t.blocks) == (1, len(chain.chain), len(chain.chain))
        assert result.head_id == final.head_hash.hex()
        assert result.state_root == final.digest().hex()
        assert t.slots_settled == final.settled_slots == 2
        assert t.missing_readings == 1  # m0 sold in the first slot and never read
        assert t.balances[GRID] == final.balances[GRID] and t.balances.get(POOL, 0) == 0
        assert t.bought_p2p_wh == t.sold_p2p_wh == t.energy_traded_wh > 0
        assert all(result.conservation.values())
        assert result.to_json()["checked"]["commit_signatures"] == 4 * len(chain.chain)


def test_a_chain_of_bundles_passes_and_counts_their_parts(tmp_path: Path) -> None:
    bundled = small_chain(bundled=True)
    path = export(bundled.chain, tmp_path / "b.gnc", bundled.community.genesis)
    for jobs in (1, 2):  # the pre-verifying pool names bundles' ids and order keys as the ledger
        result = run_audit(open_chain(path), jobs=jobs)
        assert result.ok, result.discrepancy
        final = bundled.states[-1]
        assert result.state_root == final.digest().hex()
        assert result.tally.slots_settled == 2 and result.tally.missing_readings == 1
        doc = result.to_json()
        # 7 orders, 1 cancel, 4 lone readings, 6 bundles (6 readings, one of them with an order)
        assert doc["transactions"] == {"orders": 8, "cancels": 1, "readings": 10, "bundles": 6}
        assert doc["checked"]["transactions"] == doc["checked"]["transaction_signatures"] == 18


def test_an_audit_resumes_from_its_checkpoint(chain: SmallChain, tmp_path: Path) -> None:
    path = export(chain.chain, tmp_path / "c.gnc", chain.community.genesis)
    cp = tmp_path / "audit.checkpoint"
    whole = run_audit(open_chain(path), jobs=1)
    # stop after the first record: a checkpoint every block, then a fresh run resumes
    first = run_audit(open_chain(path), jobs=1, checkpoint=cp, checkpoint_every=1)
    assert first.ok and cp.is_file()
    resumed = run_audit(open_chain(path), jobs=1, checkpoint=cp, resume=True)
    assert resumed.ok and resumed.resumed_from == len(chain.chain)
    assert (resumed.head_id, resumed.state_root) == (whole.head_id, whole.state_root)
    assert resumed.tally == whole.tally


def test_an_interrupted_audit_resumes_midway_with_the_same_result(
    chain: SmallChain, tmp_path: Path
) -> None:
    path = export(chain.chain, tmp_path / "c.gnc", chain.community.genesis, per_record=2)
    whole = run_audit(open_chain(path), jobs=1)
    cp = tmp_path / "cp"

    def stop_at_5(p: Progress) -> None:
        if p.height >= 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_audit(open_chain(path), jobs=1, checkpoint=cp, checkpoint_every=2, progress=stop_at_5)
    resumed = run_audit(open_chain(path), jobs=2, checkpoint=cp, resume=True)
    assert resumed.ok and 0 < resumed.resumed_from < len(chain.chain)
    assert (resumed.head_id, resumed.state_root) == (whole.head_id, whole.state_root)
    assert resumed.tally == whole.tally
    assert resumed.file_sha256 == whole.file_sha256 != ""


def _node_dir(chain: SmallChain, tmp_path: Path, *, snapshot_at: int) -> Path:
    d = tmp_path / "node"
    g = tmp_path / "genesis.toml"
    write_genesis(g, chain.community.genesis)
    create_data_dir(d, genesis=g)
    with NodeStore.open(d / "data" / "node.sqlite", durability=Durability.NORMAL) as store:
        for height, block, commit in chain.chain:
            store.put_block(height, block_hash(block), block, commit)
        store.put_snapshot(snapshot_at, chain.states[snapshot_at].encode())
    return d


def test_a_node_directory_is_audited_against_its_own_snapshot(
    chain: SmallChain, tmp_path: Path
) -> None:
    d = _node_dir(chain, tmp_path, snapshot_at=6)
    result = run_audit(open_chain(d), jobs=1)
    assert result.ok
    assert any("snapshot at height 6" in a for a in result.agreement)


def test_a_node_whose_snapshot_disagrees_is_named(chain: SmallChain, tmp_path: Path) -> None:
    from dataclasses import replace

    d = _node_dir(chain, tmp_path, snapshot_at=5)
    s = chain.states[6]  # what a lying node might hold at 6: one household's balance changed
    h = next(k for k in s.balances if k not in (GRID, POOL))
    lie = replace(s, balances={**s.balances, h: s.balances[h] + 1})
    with NodeStore.open(d / "data" / "node.sqlite", durability=Durability.NORMAL) as store:
        store.put_snapshot(6, lie.encode())
    result = run_audit(open_chain(d), jobs=1)
    assert result.discrepancy is not None
    assert (result.discrepancy.step, result.discrepancy.height) == ("disagrees", 6)


def test_the_cli_prints_writes_reports_and_checks_expectations(
    chain: SmallChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = export(chain.chain, tmp_path / "c.gnc", chain.community.genesis)
    g = tmp_path / "genesis.toml"
    write_genesis(g, chain.community.genesis)
    head = chain.states[-1].head_hash.hex()
    code = main(
        ["audit", str(path), "--genesis", str(g), "--out", str(tmp_path / "r"), "--quiet",
         "--jobs", "1", "--expect-head", head]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "AUDIT PASSED" in out and "slots settled" in out and "conservation" in out
    doc = json.loads((tmp_path / "r" / "audit.json").read_text())
    assert doc["ok"] and doc["chain"]["head_id"] == head
    html = (tmp_path / "r" / "audit.html").read_text()
    assert (
        "Audit passed" in html and "<script" not in html and "http" not in html.split("<body>")[1]
    )
    code = main(["audit", str(path), "--quiet", "--jobs", "1", "--expect-root", "00" * 32])
    out = capsys.readouterr().out
    assert code == 1 and "DISCREPANCY" in out and "disagrees" in out


def test_bad_arguments_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", str(tmp_path / "nothing.gnc"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
    (tmp_path / "x.gnc").write_bytes(b"not a chain")
    assert main(["audit", str(tmp_path / "x.gnc"), "--quiet"]) == 2
    assert "not a gridnode chain export" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "x.gnc"), "--resume"]) == 2
    assert main(["audit", str(tmp_path / "x.gnc"), "--expect-head", "abc"]) == 2


def test_explain_finds_an_order_a_bundle_placed_by_its_order_id() -> None:
    from gridnode.chain import ChainReader
    from gridnode.core.ledger import BundledOrder, SignedBundle
    from gridnode.explain import explain_order

    bundled = small_chain(bundled=True)
    facts = list(ChainReader(bundled.community.genesis).read_all(bundled.chain))
    placed = [o for f in facts for o in f.orders if isinstance(o, BundledOrder)]
    (order,) = placed  # member 0's bundle carried one order
    bundle = next(
        tx for f in facts for tx in f.block.txs if isinstance(tx, SignedBundle) and tx.orders
    )
    doc = explain_order(order.order.order_id, facts)
    assert doc["found"]
    (version,) = doc["versions"]
    assert version["placed_by"] == "bundle" and version["tx_id"] == bundle.id.hex()
    assert version["slot"] == order.order.slot
