"""The audit: a chain re-verified from genesis by someone who trusts nothing but the genesis.

``docs/audit.md`` lists the rules an audit checks; this module runs them. Given a chain — a node's
data directory (its SQLite store) or an export file (:mod:`gridnode.chainfile`) — and a genesis,
:func:`run_audit`:

1. reads every block in height order with the one chain reader (:class:`gridnode.chain.ChainReader`):
   each commit certificate verified (precommits of more than 2/3 of the genesis validators for
   exactly that block id at that height), each block decoded (its header must name exactly its
   transactions), each transaction's signature and admission rule re-checked, every due slot
   cleared and settled again by the ledger's own rules and each block's state root recomputed;
2. re-adds every settlement's transfers into balances and every bill into totals, independently of
   the ledger, and at the end compares them with the ledger's (and checks Σ balances = 0 and
   Σ bought = Σ sold);
3. for an export, checks its end record (count, last block id, SHA-256 of the file); for a node
   directory, checks that the node's own latest state snapshot equals the state the audit computed
   at that height (``agrees``), and ``expect_head``/``expect_root`` when given.

Signatures (transactions and commits) are checked in a pool of worker processes (``jobs``) ahead
of the reader, which then skips the ones that verified (:class:`~gridnode.chain.ChainReader`'s
``verified``/``verified_votes``: an id vouches for exactly those bytes); whatever a worker could
not verify is checked again by the reader, which names the failure. Every ``checkpoint_every``
blocks the audit writes a checkpoint (its own state snapshot, tallies and position), so a later
run with ``resume`` continues there.

The first discrepancy stops the audit: :class:`Discrepancy` names the height, the step
(``bad_commit``, ``bad_block``, ``broken_rule``, ``bad_file``, ``checksum_mismatch``, …), the
rule (the ledger's or consensus' reason code) and the transaction (index in the block, id,
household) when one is to blame.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Final

from gridnode.chain import BlockFacts, ChainError, ChainReader, stored_blocks
from gridnode.chainfile import MAGIC, ChainFileReader, genesis_json
from gridnode.config import load_config, load_genesis
from gridnode.core.consensus_messages import ValidatorSet, decode_commit, verify_commit
from gridnode.core.ledger import (
    Genesis,
    LedgerState,
    SignedBundle,
    SignedOrder,
    decode_block,
    decode_state,
    verify_signature,
)
from gridnode.store import NodeStore
from market.codec import pack, unpack
from market.errors import ChainReason, InvalidInput, UsageError
from market.orders import validate_order
from market.settlement import GRID, POOL

__all__ = [
    "AuditResult",
    "BlockPipeline",
    "ChainSource",
    "Discrepancy",
    "open_chain",
    "run_audit",
]

BATCH_BLOCKS: Final = 32
CHECKPOINT_VERSION: Final = 1


# ---------------------------------------------------------------------------------- sources


@dataclass
class ChainSource:
    """A chain to read: its genesis and where its blocks come from."""

    path: Path
    kind: str  # "file" or "node"
    genesis: Genesis
    genesis_from: str  # where the genesis came from (the user's file, or the source itself)
    _file: ChainFileReader | None = None
    _store: Any = None
    #: for a node directory: the node's own latest snapshot (height, state bytes)
    node_snapshot: tuple[int, bytes] | None = None
    node_head: int | None = None

    def batches(
        self, *, offset: int = 0, next_height: int = 1
    ) -> Iterator[list[tuple[int, bytes, bytes]]]:
        """Blocks in batches of consecutive heights, from ``next_height`` (and, for a file, the
        byte ``offset`` a checkpoint recorded)."""
        if self.kind == "file":
            reader = ChainFileReader(
                self.path, offset=offset, next_height=next_height if offset else None
            )
            self._file = reader
            yield from reader.records()
            return
        batch: list[tuple[int, bytes, bytes]] = []
        for item in stored_blocks(self._store, from_height=next_height):
            batch.append(item)
            if len(batch) >= BATCH_BLOCKS:
                yield batch
                batch = []
        if batch:
            yield batch

    @property
    def offset(self) -> int:
        return self._file.offset if self._file is not None else 0

    @property
    def size(self) -> int:
        """An export's size in bytes (0 for a node directory)."""
        return self.path.stat().st_size if self.kind == "file" else 0

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def open_chain(path: Path, *, genesis: Genesis | None = None) -> ChainSource:
    """A node's data directory (its ``genesis.toml`` and SQLite store) or an export file.

    ``genesis``: the community's genesis as the caller knows it; without it the source's own is
    used (and the audit says so). A source whose genesis differs from the given one is refused."""
    if path.is_dir():
        config = load_config(path)
        own = load_genesis(config.genesis_path)
        store_path = config.data_dir / "node.sqlite"
        if not store_path.is_file():
            raise UsageError(f"{store_path}: no node store (is {path} a gridnode data directory?)")
        store = NodeStore.open(store_path)
        src = ChainSource(
            path, "node", genesis or own, "given" if genesis else str(config.genesis_path)
        )
        src._store = store
        snap = store.latest_snapshot()
        if snap is not None:
            src.node_snapshot = (snap.height, snap.state)
        head = store.head()
        src.node_head = head.height if head is not None else 0
        if own.hash != src.genesis.hash:
            store.close()
            raise UsageError(f"{path}: the node's genesis is not the given one (another community)")
        return src
    if not path.is_file():
        raise UsageError(f"{path}: no such file or directory")
    with path.open("rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise UsageError(f"{path}: not a gridnode chain export (nor a data directory)")
    reader = ChainFileReader(path)
    reader.close()  # the genesis is all it reads here; batches() opens it again
    src = ChainSource(
        path, "file", genesis or reader.genesis, "given" if genesis else "the export file"
    )
    if reader.genesis.hash != src.genesis.hash:
        raise UsageError(f"{path}: the export's genesis is not the given one (another community)")
    return src


# ---------------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def _init_worker(genesis_text: str) -> None:
    genesis = Genesis.from_dict(json.loads(genesis_text))
    _WORKER["genesis"] = genesis
    _WORKER["validators"] = ValidatorSet(
        tuple(bytes.fromhex(v) for v in genesis.validators), verified=set()
    )


def _verify_batch(batch: list[tuple[int, bytes, bytes]]) -> tuple[list[bytes], list[Any], int]:
    """Transaction ids whose signature (and, for orders, static rules) verified, the commit
    signatures that verified, and how many signatures were checked. Anything that fails is left
    out: the reader checks it again and names it."""
    genesis: Genesis = _WORKER["genesis"]
    validators: ValidatorSet = _WORKER["validators"]
    cache = validators.verified
    assert cache is not None
    cache.clear()
    ids: list[bytes] = []
    checked = 0
    for height, block, commit in batch:
        with contextlib.suppress(InvalidInput):  # the reader checks it again and names it
            verify_commit(validators, decode_commit(commit), block, height=height)
        try:
            parsed = decode_block(block)
        except InvalidInput:
            continue
        for tx in parsed.txs:
            checked += 1
            if tx.household not in genesis.member_set or not verify_signature(genesis, tx):
                continue
            ids.append(tx.id)
            if isinstance(tx, SignedOrder):
                try:
                    validate_order(tx.order, limits=genesis.limits)
                except InvalidInput:
                    continue
                ids.append(b"o" + tx.id)
            elif isinstance(tx, SignedBundle):  # each order's key as the ledger's cache names it
                for i, order in enumerate(tx.orders):
                    try:
                        validate_order(order, limits=genesis.limits)
                    except InvalidInput:
                        continue
                    ids.append(b"o" + tx.id + bytes((i & 0xFF,)))
    return ids, list(cache), checked


# ---------------------------------------------------------------------------------- tallies


@dataclass
class Tally:
    """What the audit counts and re-adds as it reads (all integers)."""

    first_height: int = 0
    last_height: int = 0
    first_time_ms: int = 0
    last_time_ms: int = 0
    blocks: int = 0
    orders: int = 0  # every order, its own transaction or a bundle's
    cancels: int = 0
    readings: int = 0  # every reading, its own transaction or a bundle's
    bundles: int = 0
    household_txs: int = 0  # signed household transactions (one signature each)
    commit_signatures: int = 0
    slots_cleared: int = 0
    slots_traded: int = 0
    trades: int = 0
    energy_traded_wh: int = 0
    trade_value_micro: int = 0
    slots_settled: int = 0
    bills: int = 0
    bought_p2p_wh: int = 0
    sold_p2p_wh: int = 0
    grid_import_wh: int = 0
    grid_export_wh: int = 0
    bills_micro: int = 0
    grid_only_bills_micro: int = 0
    money_moved_micro: int = 0
    transfers: int = 0
    missing_readings: int = 0
    balances: dict[str, int] = field(default_factory=dict)
    proposers: dict[str, int] = field(default_factory=dict)

    def add(self, facts: BlockFacts, commit_sigs: int) -> None:
        b = facts.block
        if not self.blocks:
            self.first_height, self.first_time_ms = b.height, b.time_ms
        self.blocks += 1
        self.last_height, self.last_time_ms = b.height, b.time_ms
        self.commit_signatures += commit_sigs
        self.proposers[b.proposer] = self.proposers.get(b.proposer, 0) + 1
        for one in b.txs:
            kind = type(one).__name__
            if kind == "SignedOrder":
                self.orders += 1
            elif kind == "SignedCancel":
                self.cancels += 1
            elif kind == "SignedReading":
                self.readings += 1
            elif isinstance(one, SignedBundle):
                self.bundles += 1
                self.orders += len(one.orders)
                self.readings += one.reading is not None
            else:
                continue
            self.household_txs += 1
        for c in facts.cleared:
            self.slots_cleared += 1
            if c.trades:
                self.slots_traded += 1
            self.trades += len(c.trades)
            for t in c.trades:
                self.energy_traded_wh += t.energy_wh
                self.trade_value_micro += t.amount_micro
        bal = self.balances
        for s in facts.settled:
            self.slots_settled += 1
            for bill in s.settlement.bills:
                self.bills += 1
                self.bought_p2p_wh += bill.bought_p2p_wh
                self.sold_p2p_wh += bill.sold_p2p_wh
                self.grid_import_wh += bill.grid_import_wh
                self.grid_export_wh += bill.grid_export_wh
                self.bills_micro += bill.bill_micro
                self.grid_only_bills_micro += bill.grid_only_bill_micro
                if bill.household not in s.readings:
                    self.missing_readings += 1
            for move in s.settlement.transfers:
                self.transfers += 1
                self.money_moved_micro += move.amount_micro
                bal[move.payer] = bal.get(move.payer, 0) - move.amount_micro
                bal[move.payee] = bal.get(move.payee, 0) + move.amount_micro


# ---------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """The first thing that did not verify."""

    height: int
    step: str  # the chain reader's or file's reason: bad_commit, bad_block, broken_rule, …
    rule: str  # the ledger's / consensus' own reason code ("" if the step is the rule)
    message: str
    tx_index: int | None = None
    tx_id: str = ""
    household: str = ""

    def describe(self) -> str:
        where = f"height {self.height}"
        if self.tx_index is not None:
            where += f", transaction {self.tx_index} ({self.tx_id[:16]} from {self.household[:16]})"
        return (
            f"{where}: {self.step}" + (f" / {self.rule}" if self.rule else "") + f": {self.message}"
        )


@dataclass
class AuditResult:
    source: str
    kind: str
    genesis_hash: str
    genesis_from: str
    community_id: str
    members: int
    validators: int
    tally: Tally
    head_id: str = ""
    state_root: str = ""
    discrepancy: Discrepancy | None = None
    agreement: list[str] = field(default_factory=list)  # what the audit compared and found equal
    conservation: dict[str, bool] = field(default_factory=dict)
    tx_signatures_checked: int = 0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    jobs: int = 1
    resumed_from: int = 0
    file_sha256: str = ""

    @property
    def ok(self) -> bool:
        return self.discrepancy is None and all(self.conservation.values())

    def to_json(self) -> dict[str, Any]:
        t = self.tally
        return {
            "ok": self.ok,
            "source": self.source,
            "kind": self.kind,
            "genesis": {
                "hash": self.genesis_hash,
                "from": self.genesis_from,
                "community_id": self.community_id,
                "members": self.members,
                "validators": self.validators,
            },
            "chain": {
                "first_height": t.first_height,
                "last_height": t.last_height,
                "blocks": t.blocks,
                "first_time_ms": t.first_time_ms,
                "last_time_ms": t.last_time_ms,
                "head_id": self.head_id,
                "state_root": self.state_root,
                "file_sha256": self.file_sha256,
                "resumed_from": self.resumed_from,
            },
            "checked": {
                "commits": t.blocks,
                "commit_signatures": t.commit_signatures,
                "transactions": t.household_txs,
                "transaction_signatures": t.household_txs,
                "state_roots": t.blocks,
            },
            # orders and readings count a bundle's parts too; bundles counts the bundles
            "transactions": {
                "orders": t.orders,
                "cancels": t.cancels,
                "readings": t.readings,
                "bundles": t.bundles,
            },
            "market": {
                "slots_cleared": t.slots_cleared,
                "slots_with_trades": t.slots_traded,
                "trades": t.trades,
                "energy_traded_wh": t.energy_traded_wh,
                "trade_value_micro": t.trade_value_micro,
                "slots_settled": t.slots_settled,
                "bills": t.bills,
                "missing_readings_settled_as_0_wh": t.missing_readings,
                "grid_import_wh": t.grid_import_wh,
                "grid_export_wh": t.grid_export_wh,
                "bills_micro": t.bills_micro,
                "grid_only_bills_micro": t.grid_only_bills_micro,
                "savings_micro": t.grid_only_bills_micro - t.bills_micro,
                "money_moved_micro": t.money_moved_micro,
                "transfers": t.transfers,
                "grid_balance_micro": t.balances.get(GRID, 0),
                "pool_balance_micro": t.balances.get(POOL, 0),
            },
            "proposers": dict(sorted(t.proposers.items())),
            "conservation": self.conservation,
            "agreement": self.agreement,
            "discrepancy": None if self.discrepancy is None else asdict(self.discrepancy),
            "timing": {
                "wall_seconds": round(self.wall_seconds, 3),
                "cpu_seconds": round(self.cpu_seconds, 3),
                "jobs": self.jobs,
            },
        }


_TX_IN_SUBJECT = re.compile(r"\b([0-9a-f]{16}) from ([0-9a-f]{16})")


def _discrepancy(exc: ChainError, block: bytes | None) -> Discrepancy:
    cause = exc.cause
    rule = cause.reason.value if cause is not None and cause.reason != exc.reason else ""
    message = str(cause) if cause is not None else str(exc)
    out = Discrepancy(exc.height, exc.reason.value, rule, message)
    m = _TX_IN_SUBJECT.search(cause.subject) if cause is not None else None
    if m is not None and block is not None:
        try:
            parsed = decode_block(block)
        except InvalidInput:
            return out
        for i, tx in enumerate(parsed.txs):
            if tx.id.hex().startswith(m.group(1)):
                return Discrepancy(
                    exc.height, exc.reason.value, rule, message, i, tx.id.hex(), tx.household
                )
    return out


# ---------------------------------------------------------------------------------- checkpoints


def _write_checkpoint(
    path: Path, src: ChainSource, state: LedgerState, tally: Tally, offset: int
) -> None:
    data = pack(
        [
            "gn.auditcheckpoint",
            CHECKPOINT_VERSION,
            str(src.path.resolve()),
            src.genesis.hash,
            state.height,
            offset,
            state.encode(),
            json.dumps(asdict(tally), sort_keys=True),
        ]
    )
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


def _read_checkpoint(path: Path, src: ChainSource) -> tuple[LedgerState, Tally, int]:
    try:
        tag, version, where, ghash, height, offset, state_bytes, tally = unpack(
            path.read_bytes(), what="audit checkpoint", max_bytes=1 << 31
        )
        if tag != "gn.auditcheckpoint" or version != CHECKPOINT_VERSION:
            raise ValueError(tag)
    except (InvalidInput, ValueError, TypeError) as exc:
        raise UsageError(f"{path}: not an audit checkpoint ({exc})") from None
    if ghash != src.genesis.hash or where != str(src.path.resolve()):
        raise UsageError(f"{path}: a checkpoint of another audit ({where})")
    state = decode_state(state_bytes, src.genesis)
    if state.height != height:
        raise UsageError(f"{path}: inconsistent checkpoint")
    return state, Tally(**json.loads(tally)), offset


# ---------------------------------------------------------------------------------- the audit


class BlockPipeline:
    """A chain read with signatures checked ahead in worker processes (see the module rules).

    :meth:`batches` yields ``(batch, facts, position)`` per batch of consecutive blocks, after the
    reader read them all: ``position`` is where a later pipeline may resume (an export's byte
    offset). A block that does not read raises :class:`~gridnode.chain.ChainError`;
    :attr:`current` is then its bytes."""

    def __init__(
        self,
        src: ChainSource,
        *,
        jobs: int,
        state: LedgerState | None = None,
        offset: int = 0,
        after_block: Callable[[int, LedgerState], None] | None = None,
    ) -> None:
        """``after_block(height, state)`` is called after each block is read."""
        self.src = src
        self._after_block = after_block
        self._verified: set[bytes] = set()
        self._votes: set[tuple[int, str, bytes, bytes]] = set()
        pooled = jobs > 1
        self.reader = ChainReader(
            src.genesis,
            verified=self._verified if pooled else None,
            verified_votes=self._votes if pooled else None,
            state=state,
        )
        self._offset = offset
        self._jobs = jobs
        self._pool = (
            ProcessPoolExecutor(
                max_workers=jobs,
                mp_context=get_context("spawn"),
                initializer=_init_worker,
                initargs=(genesis_json(src.genesis),),
            )
            if pooled
            else None
        )
        self.current: bytes | None = None
        self.tx_signatures_checked = 0

    def batches(self) -> Iterator[tuple[list[tuple[int, bytes, bytes]], list[BlockFacts], int]]:
        window: deque[tuple[list[tuple[int, bytes, bytes]], Future[Any] | None, int]] = deque()
        src, pool = self.src, self._pool
        source = src.batches(offset=self._offset, next_height=self.reader.height + 1)
        while True:
            try:
                batch = next(source)
            except StopIteration:
                break
            except ChainError:
                # the file broke further on: the blocks read before it come first (an earlier
                # height's own failure is the first discrepancy)
                while window:
                    yield self._consume(window.popleft())
                raise
            fut = pool.submit(_verify_batch, batch) if pool is not None else None
            window.append((batch, fut, src.offset))
            while len(window) > 2 * self._jobs + 2:
                yield self._consume(window.popleft())
        while window:
            yield self._consume(window.popleft())

    def _consume(
        self, item: tuple[list[tuple[int, bytes, bytes]], Future[Any] | None, int]
    ) -> tuple[list[tuple[int, bytes, bytes]], list[BlockFacts], int]:
        batch, fut, position = item
        ids: list[bytes] = []
        if fut is not None:
            try:
                ids, vote_keys, checked = fut.result()
            except BrokenProcessPool as exc:
                raise UsageError(
                    f"a signature worker process died ({exc}); run again with --resume, or "
                    "with --jobs 1"
                ) from None
            self._verified.update(ids)
            self._votes.update(vote_keys)
            self.tx_signatures_checked += checked
        out = []
        for height, block, commit in batch:
            self.current = block
            out.append(self.reader.read(height, block, commit))
            if self._after_block is not None:
                self._after_block(height, self.reader.state)
        self.current = None
        self._verified.difference_update(ids)
        self._votes.clear()
        return batch, out, position

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


@dataclass(frozen=True, slots=True)
class Progress:
    height: int
    blocks: int
    last_height: int | None  # the source's last height, when known (a node's store)
    bytes_read: int = 0  # an export: how far into the file
    bytes_total: int = 0  # an export: its size


def run_audit(
    src: ChainSource,
    *,
    jobs: int | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 500,
    expect_head: bytes | None = None,
    expect_root: bytes | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> AuditResult:
    """Audit ``src`` (see the module rules)."""
    jobs = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    g = src.genesis
    result = AuditResult(
        source=str(src.path),
        kind=src.kind,
        genesis_hash=g.hash.hex(),
        genesis_from=src.genesis_from,
        community_id=g.community_id,
        members=len(g.members),
        validators=len(g.validators),
        tally=Tally(),
        jobs=jobs,
    )
    state: LedgerState | None = None
    offset = 0
    if resume and checkpoint is not None and checkpoint.is_file():
        state, result.tally, offset = _read_checkpoint(checkpoint, src)
        result.resumed_from = state.height
    last_known = src.node_head if src.kind == "node" else None
    since_checkpoint = 0
    tally = result.tally

    def after_block(height: int, now: LedgerState) -> None:
        if src.node_snapshot is not None and src.node_snapshot[0] == height:
            _compare_snapshot(src, now, result)

    pipeline = BlockPipeline(src, jobs=jobs, state=state, offset=offset, after_block=after_block)
    reader = pipeline.reader
    try:
        for batch, facts_list, position in pipeline.batches():
            for (_, _, commit), facts in zip(batch, facts_list, strict=True):
                tally.add(facts, len(decode_commit(commit).signatures))
            since_checkpoint += len(batch)
            if progress is not None:
                progress(Progress(reader.height, tally.blocks, last_known, position, src.size))
            if checkpoint is not None and since_checkpoint >= checkpoint_every:
                _write_checkpoint(checkpoint, src, reader.state, tally, position)
                since_checkpoint = 0
    except ChainError as exc:
        result.discrepancy = _discrepancy(exc, pipeline.current)
    finally:
        pipeline.close()
        src.close()
    result.tx_signatures_checked = pipeline.tx_signatures_checked
    final = reader.state
    result.head_id = final.head_hash.hex()
    result.state_root = final.digest().hex()
    if src.kind == "file" and src._file is not None and src._file.end is not None:
        result.file_sha256 = src._file.end.sha256.hex()
        result.agreement.append(
            f"the export's end record: {src._file.end.blocks} blocks, last id and SHA-256 match"
        )
    if result.discrepancy is None:
        _conserve(final, tally, result)
        _expectations(result, final, expect_head, expect_root)
        if checkpoint is not None:
            _write_checkpoint(checkpoint, src, final, tally, src.offset)
    result.wall_seconds = time.perf_counter() - wall0
    result.cpu_seconds = time.process_time() - cpu0
    return result


def _compare_snapshot(src: ChainSource, state: LedgerState, result: AuditResult) -> None:
    assert src.node_snapshot is not None
    height, data = src.node_snapshot
    try:
        theirs = decode_state(data, src.genesis)
    except InvalidInput as exc:
        raise ChainError(
            ChainReason.DISAGREES,
            height=height,
            expected=f"the node's snapshot at height {height} decodes",
            cause=exc,
        ) from exc
    if theirs != state:
        raise ChainError(
            ChainReason.DISAGREES,
            height=height,
            expected=f"the node's snapshot at height {height} = the audited state",
            cause=InvalidInput(
                reason=ChainReason.DISAGREES,
                subject=f"snapshot at height {height}",
                expected=state.digest().hex()[:16],
                found=theirs.digest().hex()[:16],
            ),
        )
    result.agreement.append(f"the node's own state snapshot at height {height}")


def _conserve(final: LedgerState, tally: Tally, result: AuditResult) -> None:
    """The ledger's balances and totals against the audit's own sums of transfers and bills."""
    mine = {k: v for k, v in tally.balances.items() if v or k in (GRID, POOL)}
    theirs = {k: v for k, v in final.balances.items() if v or k in (GRID, POOL)}
    totals = final.totals.values()
    result.conservation = {
        "balances_sum_to_zero": sum(final.balances.values()) == 0,
        "balances_equal_the_sum_of_transfers": mine == theirs,
        "energy_bought_equals_sold": tally.bought_p2p_wh == tally.sold_p2p_wh
        and sum(t.bought_p2p_wh for t in totals) == sum(t.sold_p2p_wh for t in totals),
        "bills_equal_the_ledgers_totals": sum(t.bill_micro for t in totals) == tally.bills_micro
        and sum(t.slots_settled for t in totals) == tally.bills,
        "pool_ends_at_zero": final.balances.get(POOL, 0) == 0,
    }


def _expectations(
    result: AuditResult, final: LedgerState, head: bytes | None, root: bytes | None
) -> None:
    for what, want, got in (
        ("head id", head, final.head_hash),
        ("state root", root, final.digest()),
    ):
        if want is None:
            continue
        if want != got:
            result.discrepancy = Discrepancy(
                final.height,
                ChainReason.DISAGREES.value,
                "",
                f"{what} {got.hex()} is not the expected {want.hex()}",
            )
            return
        result.agreement.append(f"the expected {what} {want.hex()[:16]}…")
