"""What a restarting node reads from its store (:func:`recover`), and which chain the store holds
(:func:`bind`, :func:`binding_of`, :func:`check_binding`). Works on any :class:`Store`.

The binding is one metadata entry (``binding``: the 32-byte genesis hash, then the community id in
UTF-8), written in one transaction: a store is bound to both or to neither.
"""

from __future__ import annotations

from typing import Final

from gridnode.store.records import Recovery, Store, StoreBinding, StoredBlock
from market.errors import InvalidInput

__all__ = [
    "BINDING_KEY",
    "bind",
    "binding_of",
    "check_binding",
    "decode_binding",
    "encode_binding",
    "recover",
]

#: the metadata key of the store's :class:`StoreBinding`
BINDING_KEY: Final = "binding"
_HASH_BYTES: Final = 32


def recover(store: Store) -> Recovery:
    """Everything a restarting node needs, read from ``store`` (the recovery contract in
    :mod:`gridnode.store`)."""
    head = store.head()
    snapshot = store.latest_snapshot()
    blocks: list[StoredBlock] = []
    if head is not None:
        start = snapshot.height + 1 if snapshot is not None else 0
        while start <= head.height:
            batch = store.blocks_from(start, 1000)
            if not batch:
                break
            blocks.extend(batch)
            start = batch[-1].height + 1
    wal = store.wal_since(head.height + 1 if head is not None else 0)
    return Recovery(
        head=head,
        snapshot=snapshot,
        blocks=tuple(blocks),
        wal=tuple(wal),
        last_signed=store.last_signed(),
    )


def encode_binding(binding: StoreBinding) -> bytes:
    if len(binding.genesis_hash) != _HASH_BYTES:
        raise InvalidInput(
            reason="bad_length",
            subject="store binding",
            field="genesis_hash",
            expected=f"{_HASH_BYTES} bytes",
            found=f"{len(binding.genesis_hash)} bytes",
        )
    return binding.genesis_hash + binding.community_id.encode("utf-8")


def binding_of(store: Store) -> StoreBinding | None:
    """The chain ``store`` was bound to, or ``None`` (a store made before bindings existed)."""
    raw = store.meta(BINDING_KEY)
    return None if raw is None else decode_binding(raw)


def decode_binding(raw: bytes) -> StoreBinding:
    """Inverse of :func:`encode_binding`; a malformed entry is ``damaged_store``."""
    if len(raw) < _HASH_BYTES:
        raise InvalidInput(
            reason="damaged_store",
            subject="store binding",
            expected=f"at least {_HASH_BYTES} bytes",
            found=f"{len(raw)} bytes",
        )
    try:
        community = raw[_HASH_BYTES:].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(
            reason="damaged_store",
            subject="store binding",
            field="community_id",
            expected="UTF-8",
            found=raw[_HASH_BYTES:].hex()[:32],
        ) from None
    return StoreBinding(community_id=community, genesis_hash=raw[:_HASH_BYTES])


def check_binding(held: StoreBinding | None, binding: StoreBinding, *, subject: str) -> None:
    """Refuse a store bound to ``held`` if that is another chain than ``binding`` (an unbound
    store, ``held`` ``None``, passes): ``other_community``, else ``other_genesis``."""
    if held is None or held == binding:
        return
    if held.community_id != binding.community_id:
        raise InvalidInput(
            reason="other_community",
            subject=subject,
            field="community_id",
            expected=binding.community_id,
            found=held.community_id,
        )
    raise InvalidInput(
        reason="other_genesis",
        subject=subject,
        field="genesis_hash",
        expected=binding.genesis_hash.hex(),
        found=held.genesis_hash.hex(),
    )


def bind(store: Store, binding: StoreBinding) -> None:
    """Record ``binding`` in ``store`` (a no-op if it holds exactly that; refused as in
    :func:`check_binding` if it holds another)."""
    held = binding_of(store)
    check_binding(held, binding, subject="store")
    if held is None:
        store.set_meta(BINDING_KEY, encode_binding(binding))
