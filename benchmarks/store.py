"""Store throughput: blocks appended per second at synchronous=FULL vs NORMAL, last-signed writes
per second (FULL: what bounds a validator's vote rate), WAL appends per second, and block reads.

    python benchmarks/store.py [--blocks 2000] [--block-bytes 4096] [--commit-bytes 3000] [--dir D]

Each figure is one run on a fresh file in ``--dir`` (default: a temporary directory, i.e. the disk
the data directory would be on if it is the same file system). Wall-clock figures; they depend on
the disk's fsync latency far more than on the CPU.
"""

from __future__ import annotations

import argparse
import hashlib
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--block-bytes", type=int, default=4096)
    parser.add_argument("--commit-bytes", type=int, default=3000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    n = args.blocks
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        print(
            f"store benchmark: {n} blocks of {args.block_bytes} B + {args.commit_bytes} B commit,"
            f" SQLite in {base}"
        )
        for durability in (Durability.FULL, Durability.NORMAL):
            path = base / f"blocks-{durability.name}.sqlite"
            with NodeStore.open(path, durability=durability) as s:
                rate, ms = bench_blocks(s, n, args.block_bytes, args.commit_bytes)
            print(
                f"  put_block  synchronous={durability.name:<6}  {rate:9.0f} blocks/s  {ms:7.3f} ms each"
            )
        for durability in (Durability.FULL, Durability.NORMAL):
            with NodeStore.open(base / f"ls-{durability.name}.sqlite", durability=durability) as s:
                rate, ms = bench_last_signed(s, n)
            print(
                f"  save_last_signed  {durability.name:<6}  {rate:9.0f} writes/s  {ms:7.3f} ms each"
            )
        with NodeStore.open(base / "signed.sqlite") as s:
            rate, ms = bench_append_signed(s, n)
        print(f"  append_signed  FULL  {rate:9.0f} votes/s  {ms:7.3f} ms each (WAL + last-signed)")
        with NodeStore.open(base / "wal.sqlite") as s:
            rate, ms = bench_wal(s, n)
        print(f"  append_wal  FULL            {rate:9.0f} records/s {ms:7.3f} ms each")
        with NodeStore.open(base / "blocks-FULL.sqlite") as s:
            start = time.perf_counter()
            got = 0
            h = 0
            while batch := s.blocks_from(h, 500):
                got += len(batch)
                h = batch[-1].height + 1
            elapsed = time.perf_counter() - start
        print(f"  blocks_from (500/batch)     {got / elapsed:9.0f} blocks/s read")
        mem = MemoryStore()
        rate, ms = bench_blocks(mem, n, args.block_bytes, args.commit_bytes)
        print(f"  MemoryStore put_block       {rate:9.0f} blocks/s  {ms:7.3f} ms each")


if __name__ == "__main__":
    main()
