"""Names and identities on the wire: topic names, stream protocol ids, peer ids and keys.

Rules of this module:

* The libp2p key *is* the household's Ed25519 key (:class:`gridnode.core.crypto.KeyPair` seed), so
  the peer id derives from the household key and :func:`public_key_of` recovers the 32-byte key
  from a peer id (``docs/protocol.md`` §1). A peer id that is not the identity multihash of an
  Ed25519 key is refused (:class:`~market.errors.InvalidInput`, ``not_ed25519_peer_id``).
* Topic names are ``/gridnode/<community>/<name>/<version>``, stream protocol ids
  ``/gridnode/<community>/<name>/1.0.0``; ``<name>`` is 1–64 chars of ``[a-z0-9._-]`` and the
  community id follows the ledger's rule (printable ASCII, at most 64, no ``/`` or space).
* Pure functions: no I/O (libp2p is used only for its key and id types).
"""

from __future__ import annotations

import functools
import re
from typing import Final

from libp2p.crypto.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from libp2p.crypto.keys import KeyPair as Libp2pKeyPair
from libp2p.peer.id import ID

from gridnode.core.crypto import KeyPair
from market.errors import InvalidInput, UsageError, WireReason

__all__ = [
    "check_community",
    "libp2p_key_pair",
    "peer_id_of",
    "peer_id_of_hex",
    "public_hex_of",
    "public_key_of",
    "stream_protocol",
    "topic_name",
]

_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# identity multihash (0x00, len 36) of the protobuf PublicKey {Type: Ed25519, Data: 32 bytes}
_ED25519_PEER_ID_PREFIX: Final = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])


def _check_name(kind: str, name: str) -> str:
    if not _NAME_RE.match(name):
        raise UsageError(
            f"{kind} {name!r}: expected 1-64 chars of [a-z0-9._-] starting with a letter or digit"
        )
    return name


def check_community(community: str) -> str:
    """``community`` if it is a valid community id (the ledger's rule), else :class:`UsageError`."""
    if (
        not community
        or len(community) > 64
        or not community.isascii()
        or not community.isprintable()
        or "/" in community
        or " " in community
    ):
        raise UsageError(
            f"community {community!r}: expected 1-64 printable ASCII chars without '/' or spaces"
        )
    return community


def topic_name(community: str, name: str, version: int = 1) -> str:
    """The GossipSub topic for ``name`` in ``community``: ``/gridnode/<community>/<name>/<version>``.

    A topic's payload format changes only with a new version (a new topic)."""
    if not isinstance(version, int) or isinstance(version, bool) or not 0 < version < 1000:
        raise UsageError(f"topic version {version!r}: expected an int 1..999")
    return f"/gridnode/{check_community(community)}/{_check_name('topic', name)}/{version}"


def stream_protocol(community: str, name: str) -> str:
    """The stream protocol id: ``/gridnode/<community>/<name>/1.0.0``."""
    return f"/gridnode/{check_community(community)}/{_check_name('protocol', name)}/1.0.0"


def libp2p_key_pair(keys: KeyPair) -> Libp2pKeyPair:
    """The libp2p key pair for our household key (same Ed25519 seed, same public key)."""
    private = Ed25519PrivateKey.new(keys.seed)
    return Libp2pKeyPair(private, private.get_public_key())


@functools.lru_cache(maxsize=4096)  # pure; peers' ids are converted on every message
def peer_id_of(public_key: bytes) -> str:
    """The base58 libp2p peer id of a 32-byte Ed25519 public key."""
    return str(ID.from_pubkey(Ed25519PublicKey.from_bytes(public_key)).to_base58())


def peer_id_of_hex(public_hex: str) -> str:
    """:func:`peer_id_of` for a key given as 64 lowercase hex chars (as in genesis and ledger)."""
    try:
        return peer_id_of(bytes.fromhex(public_hex))
    except Exception as exc:
        raise InvalidInput(
            reason=WireReason.MALFORMED_PUBLIC_KEY, subject="public key", found=public_hex[:80]
        ) from exc


def public_hex_of(peer_id: str) -> str:
    """:func:`public_key_of` as 64 lowercase hex chars."""
    return public_key_of(peer_id).hex()


@functools.lru_cache(maxsize=4096)  # pure (a refusal is raised again, never cached)
def public_key_of(peer_id: str) -> bytes:
    """The 32-byte Ed25519 key inside a peer id; :class:`InvalidInput` for anything else."""
    try:
        raw = ID.from_base58(peer_id).to_bytes()
    except Exception as exc:
        raise InvalidInput(
            reason=WireReason.MALFORMED_PEER_ID, subject="peer id", found=peer_id[:80]
        ) from exc
    if len(raw) != 38 or not raw.startswith(_ED25519_PEER_ID_PREFIX):
        raise InvalidInput(
            reason=WireReason.NOT_ED25519_PEER_ID,
            subject="peer id",
            expected="identity multihash of an Ed25519 key",
            found=peer_id[:80],
        )
    return bytes(raw[len(_ED25519_PEER_ID_PREFIX) :])
