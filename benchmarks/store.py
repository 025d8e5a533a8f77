"""Store throughput: blocks appended per second at synchronous=FULL vs NORMAL, last-signed writes
per second (FULL: what bounds a validator's vote rate), WAL appends per second, and block reads.

    python benchmarks/store.py [--blocks 1000] [--repeat 3] [--block-bytes 4096] [--dir D]

Each run uses a fresh file in ``--dir`` (default: a temporary directory, i.e. the disk
the data directory would be on if it is the same file system). Wall-clock figures; they depend on
the disk's fsync latency far more than on the CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gridnode.store import Durability, MemoryStore, NodeStore, Store


def _payload(label: str, i: int, size: int) -> bytes:
    return hashlib.shake_256(f"{label}{i}".encode()).digest(size)


def _rate(n: int, fn: Callable[[int], None]) -> tuple[float, float]:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    elapsed = time.perf_counter() - start
    return n / elapsed, elapsed / n * 1e3


def bench_blocks(store: Store, n: int, block_bytes: int, commit_bytes: int) -> tuple[float, float]:
    blocks = [_payload("b", i, block_bytes) for i in range(n)]
    commits = [_payload("c", i, commit_bytes) for i in range(n)]
    hashes = [hashlib.sha256(b).digest() for b in blocks]
    return _rate(n, lambda i: store.put_block(i + 1, hashes[i], blocks[i], commits[i]))


def bench_last_signed(store: Store, n: int) -> tuple[float, float]:
    vote = _payload("v", 0, 120)
    return _rate(n, lambda i: store.save_last_signed(1 + i // 3, 0, i % 3, vote))


def bench_append_signed(store: Store, n: int) -> tuple[float, float]:
    vote = _payload("v", 0, 120)
    return _rate(n, lambda i: store.append_signed(1 + i // 3, 0, i % 3, vote))


def bench_wal(store: Store, n: int) -> tuple[float, float]:
    record = _payload("w", 0, 300)
    return _rate(n, lambda i: store.append_wal(1 + i // 10, record))


def _row(name: str, mode: str, rates: list[float], unit: str) -> None:
    rates = sorted(rates)
    med = statistics.median(rates)
    print(
        f"  {name:<24}{mode:<8}{med:10.0f} {unit}/s  (min {rates[0]:.0f}, max {rates[-1]:.0f})"
        f"  {1e3 / med:8.3f} ms each"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=1000, help="writes per measurement")
    parser.add_argument("--block-bytes", type=int, default=4096)
    parser.add_argument("--commit-bytes", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median shown)")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    n = args.blocks
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        print(
            f"store benchmark: {n} writes per run, {args.repeat} runs; blocks of {args.block_bytes} B"
            f" + {args.commit_bytes} B commit; SQLite {sqlite3.sqlite_version} in {base}"
        )
        cases: list[tuple[str, str, Callable[[Store], tuple[float, float]]]] = [
            (
                "put_block",
                "blocks",
                lambda s: bench_blocks(s, n, args.block_bytes, args.commit_bytes),
            ),
            ("save_last_signed", "writes", lambda s: bench_last_signed(s, n)),
            ("append_signed", "votes", lambda s: bench_append_signed(s, n)),
            ("append_wal", "records", lambda s: bench_wal(s, n)),
        ]
        run = 0
        for name, unit, fn in cases:
            for durability in (Durability.FULL, Durability.NORMAL):
                rates = []
                for _ in range(args.repeat):
                    run += 1
                    with NodeStore.open(base / f"{run}.sqlite", durability=durability) as s:
                        rates.append(fn(s)[0])
                _row(name, durability.name, rates, unit)
        with NodeStore.open(base / "1.sqlite") as s:  # the first put_block file
            start = time.perf_counter()
            got = 0
            h = 0
            while batch := s.blocks_from(h, 500):
                got += len(batch)
                h = batch[-1].height + 1
            elapsed = time.perf_counter() - start
        _row("blocks_from (500/batch)", "read", [got / elapsed], "blocks")
        mem_rates = [
            bench_blocks(MemoryStore(), n, args.block_bytes, args.commit_bytes)[0]
            for _ in range(args.repeat)
        ]
        _row("MemoryStore.put_block", "-", mem_rates, "blocks")


if __name__ == "__main__":
    main()
