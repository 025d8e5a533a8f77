"""The id of a block: SHA-256 of its header, so a commit can be checked from the header alone.

Rules of this module (``docs/protocol.md`` §7.6 is the byte-exact specification):

* A ledger block is the canonical msgpack array ``["gn.block", 2, header, txs]`` whose third item
  is the header's canonical bytes as a msgpack ``bin`` (``bin 8`` or ``bin 16``, whichever is
  shortest). Its **id** is ``SHA-256(header)``: validators vote and commit on it, the next block
  names it as ``prev_hash``, and a light client that holds a header and a commit for it verifies
  the commit without the block's transactions (the header commits to them by their Merkle root).
* Any other bytes are their own header: the id of a header alone is ``SHA-256(header)``, which is
  also the id of every block carrying it; opaque test blocks hash as they are.
* Nothing here decodes the header or checks that the transactions match it: that is the ledger's
  :func:`~gridnode.core.ledger.decode_block`. This module only finds the header, in O(1).
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["BLOCK_PREFIX", "block_header", "block_id"]

#: ``fixarray(4) || fixstr "gn.block" || 2``: how every ledger block's bytes begin
BLOCK_PREFIX: Final = b"\x94\xa8gn.block\x02"


def block_header(block: bytes) -> bytes:
    """The header bytes inside ``block``; ``block`` itself if it is not shaped like a ledger block."""
    p = len(BLOCK_PREFIX)
    if not block.startswith(BLOCK_PREFIX) or len(block) < p + 2:
        return block
    marker = block[p]
    if marker == 0xC4:  # bin 8
        start, size = p + 2, block[p + 1]
    elif marker == 0xC5 and len(block) >= p + 3:  # bin 16
        start, size = p + 3, int.from_bytes(block[p + 1 : p + 3], "big")
    else:
        return block
    if start + size > len(block):
        return block
    return block[start : start + size]


def block_id(block: bytes) -> bytes:
    """SHA-256 of the block's header (see the module rules)."""
    return hashlib.sha256(block_header(block)).digest()
