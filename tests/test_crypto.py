"""Ed25519 identities: domain separation and the always-on verification count."""

from __future__ import annotations

import random

from gridnode.core.crypto import KeyPair, verify, verify_counts


def test_domain_separation() -> None:
    key = KeyPair.from_rng(random.Random(1))
    sig = key.sign("order:x", b"m")
    assert verify(key.public_key, "order:x", b"m", sig)
    assert not verify(key.public_key, "vote", b"m", sig)


def test_every_ed25519_verification_is_counted_by_domain() -> None:
    key = KeyPair.from_rng(random.Random(2))
    sig = key.sign("count-test", b"m")
    before = verify_counts()
    assert verify(key.public_key, "count-test", b"m", sig)
    assert not verify(key.public_key, "count-test", b"other", sig)  # a failed check costs the same
    assert not verify(key.public_key, "count-test", b"m", sig[:10])  # refused before Ed25519 runs
    after = verify_counts()
    assert after.get("count-test", 0) - before.get("count-test", 0) == 2
    assert {d: n for d, n in after.items() if d != "count-test"} == {
        d: n for d, n in before.items() if d != "count-test"
    }
