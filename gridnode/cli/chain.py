"""``gridnode chain export|info`` and ``gridnode audit``: a chain in one file, and its audit.

  gridnode chain export (--dir DIR | --store FILE --genesis FILE) --out FILE [--from H] [--to H]
  gridnode chain info FILE
  gridnode audit SOURCE [--genesis FILE] [--out DIR] [--jobs N] [--checkpoint FILE] [--resume]
                        [--expect-head HEX] [--expect-root HEX]

SOURCE is a node's data directory or an export file. Formats and rules: docs/audit.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from market.errors import UsageError

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "chain",
        help="export a node's chain to one portable file (chain export), or describe one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    csub = p.add_subparsers(dest="chain_command", metavar="ACTION", required=True)
    e = csub.add_parser("export", help="write a node's committed chain to an export file")
    e.add_argument("--dir", type=Path, help="the node's data directory (stopped)")
    e.add_argument("--store", type=Path, help="or: a node.sqlite store file (with --genesis)")
    e.add_argument("--genesis", type=Path, help="the community's genesis.toml (with --store)")
    e.add_argument("--out", type=Path, required=True, help="the export file to write")
    e.add_argument("--from", dest="from_height", type=int, default=1, help="first height (1)")
    e.add_argument("--to", dest="to_height", type=int, help="last height (default: the head)")
    e.set_defaults(func=_export)
    pr = csub.add_parser(
        "prove",
        help="cut a household's bill proof from a chain (gridnode verify-bill checks it)",
        description=(
            "Replay a chain (data directory or export file) to the height that settled --slot "
            "(or to --height) and write the household's bill proof there: the block header, its "
            "commit certificate and Merkle paths to the account and the slot (docs/merkle.md)."
        ),
    )
    pr.add_argument("source", type=Path, metavar="SOURCE")
    pr.add_argument("--household", required=True, help="the household's public key (hex)")
    pr.add_argument("--slot", type=int, help="prove this slot's bill (at the height settling it)")
    pr.add_argument("--height", type=int, help="or: prove the account and live slots here")
    pr.add_argument("--genesis", type=Path, help="the community's genesis.toml")
    pr.add_argument("--out", type=Path, required=True, help="the proof file to write")
    pr.set_defaults(func=_prove)
    i = csub.add_parser("info", help="check an export file's structure and checksum (no audit)")
    i.add_argument("file", type=Path)
    i.set_defaults(func=_info)

    a: argparse.ArgumentParser = sub.add_parser(
        "audit",
        help="re-verify a chain from genesis: certificates, signatures, rules, money, state roots",
        description=(
            "Audit a chain (a node's data directory or an export file) from genesis, trusting "
            "nothing but the genesis: every commit certificate, transaction signature and block "
            "rule, every clearing, settlement, balance and state root. Prints a summary, writes "
            "audit.json and a self-contained audit.html; exits 1 at the first discrepancy, which "
            "it names (height, transaction, rule). Rules: docs/audit.md."
        ),
    )
    a.add_argument("source", type=Path, metavar="SOURCE", help="data directory or export file")
    a.add_argument(
        "--genesis",
        type=Path,
        help="the community's genesis.toml as you know it (default: the source's own, reported)",
    )
    a.add_argument("--out", type=Path, help="where audit.json and audit.html go (default: none)")
    a.add_argument("--jobs", type=int, help="signature-checking processes (default: the cores)")
    a.add_argument("--checkpoint", type=Path, help="checkpoint file (written every 500 blocks)")
    a.add_argument("--resume", action="store_true", help="continue from --checkpoint if present")
    a.add_argument("--expect-head", metavar="HEX", help="the head block id the chain must end at")
    a.add_argument("--expect-root", metavar="HEX", help="the state root the chain must end at")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=_audit)


def _genesis(path: Path | None) -> Any:
    if path is None:
        return None
    from gridnode.config import load_genesis

    return load_genesis(path)


def _hex32(text: str | None, what: str) -> bytes | None:
    if text is None:
        return None
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise UsageError(f"{what}: expected 64 hex characters, got {text!r}")
    return value


def _export(args: argparse.Namespace) -> int:
    from gridnode.chainfile import write_chain_file
    from gridnode.store import NodeStore

    if (args.dir is None) == (args.store is None):
        raise UsageError("chain export: give --dir DIR, or --store FILE with --genesis FILE")
    if args.dir is not None:
        from gridnode.config import load_config, load_genesis

        config = load_config(args.dir)
        genesis = load_genesis(config.genesis_path)
        store_path = config.data_dir / "node.sqlite"
    else:
        if args.genesis is None:
            raise UsageError("chain export: --store needs --genesis")
        genesis = _genesis(args.genesis)
        store_path = args.store
    if not store_path.is_file():
        raise UsageError(f"{store_path}: no node store")
    if not args.out.parent.is_dir():
        raise UsageError(f"--out: directory {args.out.parent} does not exist")
    with NodeStore.open(store_path) as store:
        end = write_chain_file(
            args.out, genesis, store, from_height=args.from_height, to_height=args.to_height
        )
    print(
        f"wrote {args.out}: {end.blocks} blocks up to height {end.last_height}, "
        f"head {end.last_block_id.hex()[:16]}…, sha256 {end.sha256.hex()}"
    )
    return 0


def _prove(args: argparse.Namespace) -> int:
    import os

    from gridnode.audit import BlockPipeline, open_chain
    from gridnode.chain import ChainError
    from gridnode.core.ledger import decode_block
    from gridnode.core.ledger.proofs import make_bill_proof

    if (args.slot is None) == (args.height is None):
        raise UsageError("chain prove: give --slot S or --height H")
    src = open_chain(args.source, genesis=_genesis(args.genesis))
    if args.household not in src.genesis.member_index:
        src.close()
        raise UsageError(f"--household: {args.household[:16]} is not a member")
    hit: list[Any] = []  # [state] at the height to prove

    def after_block(height: int, state: Any) -> None:
        if not hit and (args.slot in state.settled or height == args.height):
            hit.append(state)

    pipeline = BlockPipeline(src, jobs=os.cpu_count() or 1, after_block=after_block)
    found = None
    try:
        for batch, _, _ in pipeline.batches():
            if hit:
                height = hit[0].height
                _, block, commit = next(b for b in batch if b[0] == height)
                found = (hit[0], decode_block(block).header.raw, commit)
                break
    except ChainError as exc:
        print(f"chain prove: the chain does not verify: {exc}", file=sys.stderr)
        return 1
    finally:
        pipeline.close()
        src.close()
    if found is None:
        raise UsageError(
            f"slot {args.slot} was never settled" if args.slot is not None else
            f"height {args.height} is beyond the chain"
        )  # fmt: skip
    state, header, commit = found
    data = make_bill_proof(
        state, header, commit, args.household, None if args.slot is None else [args.slot]
    )
    args.out.write_bytes(data)
    print(f"wrote {args.out}: {len(data):,} bytes, height {state.height}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from gridnode.chain import ChainError
    from gridnode.chainfile import ChainFileReader

    if not args.file.is_file():
        raise UsageError(f"{args.file}: no such file")
    try:
        reader = ChainFileReader(args.file)
        n = sum(1 for _ in reader)
    except ChainError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 1
    g = reader.genesis
    end = reader.end
    assert end is not None
    print(
        f"{args.file}: community {g.community_id} (genesis {g.hash.hex()[:16]}…), {n} blocks "
        f"{reader.first_height}…{end.last_height}, head {end.last_block_id.hex()[:16]}…, "
        f"sha256 {end.sha256.hex()} (structure and checksum only: gridnode audit verifies)"
    )
    return 0


def _audit(args: argparse.Namespace) -> int:
    from gridnode.audit import Progress, open_chain, run_audit
    from gridnode.audit_report import summary_lines, write_reports
    from gridnode.chain import ChainError

    if args.resume and args.checkpoint is None:
        raise UsageError("--resume needs --checkpoint FILE")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    head = _hex32(args.expect_head, "--expect-head")
    root = _hex32(args.expect_root, "--expect-root")
    try:
        src = open_chain(args.source, genesis=_genesis(args.genesis))
    except ChainError as exc:  # an export whose header record is broken
        print(f"DISCREPANCY at height {exc.height}: {exc.reason.value}: {exc}")
        print("AUDIT FAILED")
        return 1
    bar: Any = None
    if not args.quiet:
        from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]  # no stubs

        bar = tqdm(unit="block", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)

    def progress(p: Progress) -> None:
        if bar is None:
            return
        if p.bytes_total:  # an export: progress through the file, in MB
            if bar.total is None:
                bar.total = round(p.bytes_total / 1e6, 1)
                bar.unit = "MB"
            bar.update(round(p.bytes_read / 1e6, 1) - bar.n)
        else:
            if p.last_height is not None and bar.total is None:
                bar.total = p.last_height
            bar.update(p.height - bar.n)
        bar.set_postfix_str(f"height {p.height}", refresh=False)

    try:
        result = run_audit(
            src,
            jobs=args.jobs,
            checkpoint=args.checkpoint,
            resume=args.resume,
            expect_head=head,
            expect_root=root,
            progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()
    for line in summary_lines(result):
        print(line)
    if args.out is not None:
        j, h = write_reports(result, args.out)
        print(f"report: {h} (and {j.name})")
    return 0 if result.ok else 1
