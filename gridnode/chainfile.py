"""A chain in one portable file: genesis, every block with its commit certificate, a checksum.

``docs/audit.md`` ("The export format") is the specification; the file reuses the wire encodings of
``docs/protocol.md`` (a block response ``gn.blockresp`` of §7.5 carries the blocks and commits),
so whoever can sync blocks from a daemon can read an export. Rules:

* The file is ``MAGIC`` (8 bytes) followed by records, each ``uvarint(len) || body`` (the frame of
  protocol §4.2) whose body is one canonical msgpack value of at most ``MAX_RECORD_BYTES``:

  1. ``["gn.chainfile", 1, genesis_json, genesis_hash, first_height]``: the community's genesis
     as JSON text (``Genesis.to_dict``, sorted keys) and its hash, the first height that follows;
  2. any number of ``gn.blockresp`` messages, each with one or more consecutive blocks in height
     order (``[height, block, commit]``; at most ``BLOCKS_PER_RECORD`` blocks or about 1 MiB);
  3. ``["gn.chainend", 1, blocks, last_height, last_block_id, sha256]`` where ``sha256`` is the
     SHA-256 of every byte of the file before this record's length prefix.

* Writing streams from any store (:func:`write_chain`); reading streams too
  (:class:`ChainFileReader`): it yields ``(height, block, commit)`` as the chain reader
  (:mod:`gridnode.chain`) takes them, and raises :class:`~gridnode.chain.ChainError` naming the
  reason — ``bad_file`` (not an export, a record that does not decode, a height out of order),
  ``truncated`` (no end record), ``checksum_mismatch`` — and the height reached. The reader checks
  structure only: what the blocks and commits prove is the chain reader's business.
* A reader can start at a byte offset it was given by an earlier read (:attr:`ChainFileReader.offset`
  after a record), for resuming an audit: it re-hashes the bytes before it for the checksum.

Known limits: a store's exclusive lock means exporting from a running daemon's store is refused
(stop it, or export from another node).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from gridnode.chain import BlockSource, ChainError, stored_blocks
from gridnode.core.block_id import block_id
from gridnode.core.consensus_messages import (
    BlockResponse,
    SyncedBlock,
    decode_commit,
    decode_message,
    encode_commit,
    encode_message,
)
from gridnode.core.ledger import Genesis
from gridnode.net.framing import MAX_VARINT_BYTES, decode_uvarint, encode_frame
from market.codec import pack, unpack
from market.errors import ChainReason, InvalidInput

__all__ = [
    "BLOCKS_PER_RECORD",
    "MAGIC",
    "ChainFileEnd",
    "ChainFileReader",
    "write_chain",
]

MAGIC: Final = b"\x89GNC\r\n\x1a\n"
VERSION: Final = 1
MAX_RECORD_BYTES: Final = 16 * 1024 * 1024
BLOCKS_PER_RECORD: Final = 64
_RECORD_TARGET_BYTES: Final = 1 << 20
_END_TAG: Final = pack("gn.chainend")


def genesis_json(genesis: Genesis) -> str:
    return json.dumps(genesis.to_dict(), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class ChainFileEnd:
    """What an export's end record says."""

    blocks: int
    last_height: int
    last_block_id: bytes
    sha256: bytes


class _HashingWriter:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.sha.update(data)
        self.size += len(data)

    def record(self, body: bytes) -> None:
        self.write(encode_frame(body))


def write_chain(
    out: IO[bytes],
    genesis: Genesis,
    store: BlockSource,
    *,
    from_height: int = 1,
    to_height: int | None = None,
    blocks_per_record: int = BLOCKS_PER_RECORD,
) -> ChainFileEnd:
    """Write the chain ``store`` holds (heights ``from_height`` … ``to_height`` or its head) to
    ``out`` as an export file; returns what the end record says."""
    w = _HashingWriter(out)
    w.write(MAGIC)
    w.record(pack(["gn.chainfile", VERSION, genesis_json(genesis), genesis.hash, from_height]))
    batch: list[SyncedBlock] = []
    size = 0
    n = 0
    last_height, last_id = from_height - 1, b"\x00" * 32

    def flush() -> None:
        nonlocal size
        if batch:
            w.record(encode_message(BlockResponse(tuple(batch))))
            batch.clear()
            size = 0

    for height, block, commit in stored_blocks(store, from_height=from_height):
        if to_height is not None and height > to_height:
            break
        batch.append(SyncedBlock(height, block, decode_commit(commit)))
        size += len(block) + len(commit)
        n += 1
        last_height, last_id = height, block_id(block)
        if len(batch) >= blocks_per_record or size >= _RECORD_TARGET_BYTES:
            flush()
    flush()
    digest = w.sha.digest()
    w.record(pack(["gn.chainend", VERSION, n, last_height, last_id, digest]))
    return ChainFileEnd(n, last_height, last_id, digest)


def write_chain_file(
    path: Path, genesis: Genesis, store: BlockSource, **kwargs: Any
) -> ChainFileEnd:
    """:func:`write_chain` to ``path``, atomically (a temporary file renamed into place)."""
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as f:
        end = write_chain(f, genesis, store, **kwargs)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return end


class ChainFileReader:
    """Streams an export file (see the module rules). Iterate for ``(height, block, commit)``."""

    def __init__(self, path: Path, *, offset: int = 0, next_height: int | None = None) -> None:
        """``offset``/``next_height``: resume after the record that ended at ``offset`` (both
        from an earlier reader's :attr:`offset` and :attr:`next_height`)."""
        self.path = path
        self._f = path.open("rb")
        try:
            self._open(offset, next_height)
        except BaseException:
            self._f.close()
            raise

    def _open(self, offset: int, next_height: int | None) -> None:
        self._sha = hashlib.sha256()
        self.size = os.fstat(self._f.fileno()).st_size
        self.end: ChainFileEnd | None = None
        self._last_block: bytes | None = None
        head = self._f.read(len(MAGIC))
        if head != MAGIC:
            raise self._bad(0, "a gridnode chain export (magic bytes)", head[:8].hex())
        self._sha.update(head)
        body = self._record(0)
        if body is None:
            raise self._bad(0, "a header record", "end of file")
        try:
            value = unpack(body, what="chain file header", max_bytes=MAX_RECORD_BYTES)
            tag, version, gjson, ghash, first = value
            if tag != "gn.chainfile" or version != VERSION:
                raise ValueError(tag)
            self.genesis = Genesis.from_dict(json.loads(gjson))
        except (InvalidInput, ValueError, TypeError) as exc:
            raise self._bad(0, "['gn.chainfile', 1, genesis, hash, first]", str(exc)) from exc
        if self.genesis.hash != ghash:
            raise ChainError(
                ChainReason.BAD_FILE,
                height=0,
                expected=f"genesis hash {self.genesis.hash.hex()[:16]}",
                cause=InvalidInput(reason=ChainReason.BAD_FILE, subject="genesis hash"),
            )
        self.first_height: int = first
        self.next_height = first if next_height is None else next_height
        if offset:
            self._rehash_to(offset)
        self.offset = self._f.tell()

    def _bad(self, height: int, expected: str, found: str) -> ChainError:
        return ChainError(
            ChainReason.BAD_FILE,
            height=height,
            expected=expected,
            cause=InvalidInput(
                reason=ChainReason.BAD_FILE,
                subject=f"{self.path.name} at byte {self._f.tell()}",
                expected=expected,
                found=found,
            ),
        )

    def _rehash_to(self, offset: int) -> None:
        while self._f.tell() < offset:
            chunk = self._f.read(min(1 << 20, offset - self._f.tell()))
            if not chunk:
                raise self._bad(self.next_height, f"{offset} bytes", "end of file")
            self._sha.update(chunk)

    def _record(self, height: int) -> bytes | None:
        """The next record's body (hashed), or ``None`` at the end of the file."""
        prefix = bytearray()
        while True:
            b = self._f.read(1)
            if not b:
                if prefix:
                    raise self._bad(height, "a record length", "end of file")
                return None
            prefix += b
            if not b[0] & 0x80 or len(prefix) >= MAX_VARINT_BYTES:
                break
        try:
            decoded = decode_uvarint(prefix)
        except InvalidInput as exc:
            raise self._bad(height, "a minimal record length", prefix.hex()) from exc
        if decoded is None:
            raise self._bad(height, "a record length", "end of file")
        n = decoded[0]
        if n > MAX_RECORD_BYTES:
            raise self._bad(height, f"a record of <= {MAX_RECORD_BYTES} bytes", str(n))
        body = self._f.read(n)
        if len(body) != n:
            raise ChainError(
                ChainReason.TRUNCATED,
                height=height,
                expected=f"{n} bytes of record",
                cause=InvalidInput(
                    reason=ChainReason.TRUNCATED, subject=self.path.name, found=str(len(body))
                ),
            )
        self._sha.update(prefix)
        self._sha.update(body)
        return body

    def records(self) -> Iterator[list[tuple[int, bytes, bytes]]]:
        """The blocks record by record (each a list of ``(height, block, commit)``); after each,
        :attr:`offset` and :attr:`next_height` say where a later reader may resume. The end
        record is checked (count, last height and id, checksum) after the last block."""
        try:
            yield from self._records()
        finally:
            self._f.close()

    def _records(self) -> Iterator[list[tuple[int, bytes, bytes]]]:
        while True:
            before = self._sha.copy()
            body = self._record(self.next_height)
            if body is None:
                raise ChainError(
                    ChainReason.TRUNCATED,
                    height=self.next_height,
                    expected="an end record ('gn.chainend')",
                    cause=InvalidInput(
                        reason=ChainReason.TRUNCATED, subject=self.path.name, found="end of file"
                    ),
                )
            if body[1:].startswith(_END_TAG):
                self._check_end(body, before)
                return
            try:
                msg = decode_message(body)
            except InvalidInput as exc:
                raise self._bad(self.next_height, "a gn.blockresp record", str(exc)) from exc
            if not isinstance(msg, BlockResponse) or not msg.blocks:
                raise self._bad(
                    self.next_height, "a gn.blockresp record with blocks", type(msg).__name__
                )
            out = []
            for sb in msg.blocks:
                if sb.height != self.next_height:
                    raise self._bad(
                        self.next_height, f"block {self.next_height} next", f"block {sb.height}"
                    )
                out.append((sb.height, sb.block, encode_commit(sb.commit)))
                self.next_height += 1
                self._last_block = sb.block
            self.offset = self._f.tell()
            yield out

    def _check_end(self, body: bytes, before: Any) -> None:
        height = self.next_height
        try:
            tag, version, n, last, last_id, digest = unpack(
                body, what="chain file end", max_bytes=MAX_RECORD_BYTES
            )
            if tag != "gn.chainend" or version != VERSION:
                raise ValueError(tag)
        except (InvalidInput, ValueError, TypeError) as exc:
            raise self._bad(height, "['gn.chainend', 1, …]", str(exc)) from exc
        self.end = ChainFileEnd(n, last, last_id, digest)
        if self._f.read(1):
            raise self._bad(height, "nothing after the end record", "more bytes")
        if last != height - 1 or n != height - self.first_height:
            raise self._bad(height, f"{n} blocks up to {last}", f"blocks up to {height - 1}")
        if self._last_block is not None and block_id(self._last_block) != last_id:
            raise self._bad(height, f"last block id {last_id.hex()[:16]}", "another block")
        if before.digest() != digest:
            raise ChainError(
                ChainReason.CHECKSUM_MISMATCH,
                height=height,
                expected=digest.hex()[:16],
                cause=InvalidInput(
                    reason=ChainReason.CHECKSUM_MISMATCH,
                    subject=self.path.name,
                    expected=digest.hex(),
                    found=before.digest().hex(),
                ),
            )

    def close(self) -> None:
        self._f.close()

    def __iter__(self) -> Iterator[tuple[int, bytes, bytes]]:
        for batch in self.records():
            yield from batch
