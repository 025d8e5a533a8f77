"""Ed25519 edge cases: :func:`gridnode.core.crypto.verify` accepts exactly what PyNaCl accepts.

``verify`` calls libsodium's ``crypto_sign_verify_detached`` directly (``gridnode/core/crypto.py``
module rules); PyNaCl's ``VerifyKey.verify`` (``crypto_sign_open``) is the reference. The cases are
the ones where Ed25519 implementations disagree (libsodium's strict rules against ZIP-215's
permissive ones, which batch verifiers such as ed25519-zebra follow): a non-canonical ``S``,
small-order and mixed-order ``R``, small-order, non-canonical and mixed-order keys — built here
with a small reference implementation of the curve (big integers, test-only), signed with a known
scalar so the verification equation holds where it should.
"""

from __future__ import annotations

import hashlib
import random
from concurrent.futures import ThreadPoolExecutor

import nacl.signing
import pytest

from gridnode.core import crypto
from gridnode.core.crypto import KeyPair, signing_bytes, verify

# --- a reference Edwards25519 (RFC 8032 §5.1), only what the cases need -------------------------
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T)


def _add(p: Point, q: Point) -> Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % P
    b = (p[1] + p[0]) * (q[1] + q[0]) % P
    c = 2 * p[3] * q[3] * D % P
    d = 2 * p[2] * q[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(n: int, p: Point) -> Point:
    q: Point = (0, 1, 1, 0)
    while n:
        if n & 1:
            q = _add(q, p)
        p, n = _add(p, p), n >> 1
    return q


def _x(y: int, sign: int) -> int | None:
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P or (x == 0 and sign):
        return None
    return P - x if x & 1 != sign else x


def _point(y: int, sign: int = 0) -> Point:
    x = _x(y, sign)
    assert x is not None
    return (x, y, 1, x * y % P)


def _encode(p: Point) -> bytes:
    zi = pow(p[2], P - 2, P)
    x, y = p[0] * zi % P, p[1] * zi % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


B = _point(4 * pow(5, P - 2, P) % P)
T8 = _point(int.from_bytes(bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"), "little") & (2**255 - 1), 0)  # fmt: skip


def _h(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little") % L


def _sign(a: int, key: bytes, r: int, r_point: Point, signed: bytes, *, s_plus: int = 0) -> bytes:
    """A signature with nonce point ``r_point`` (``r``·B plus whatever the case adds) and scalar
    ``r + h·a`` (+ ``s_plus``): valid under the cofactorless equation iff the additions vanish."""
    enc = _encode(r_point)
    s = (r + _h(enc, key, signed) * a) % L + s_plus
    return enc + s.to_bytes(32, "little")


def _scalar(seed: bytes) -> int:
    a = bytearray(hashlib.sha512(seed).digest()[:32])
    a[0] &= 248
    a[31] = (a[31] & 127) | 64
    return int.from_bytes(a, "little")


DOMAIN = "edge-test"
SMALL_ORDER = [
    bytes.fromhex("01" + "00" * 31),  # the identity
    bytes.fromhex("ec" + "ff" * 30 + "7f"),  # order 2
    bytes(32),  # order 4
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),  # order 8
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),  # order 8
]


def _same(key: bytes, message: bytes, sig: bytes) -> bool:
    """``verify``'s answer, asserted equal to PyNaCl's."""
    answer = verify(key, DOMAIN, message, sig)
    assert answer == crypto._verify_pynacl(key, signing_bytes(DOMAIN, message), sig)
    return answer


def test_the_direct_call_is_in_use() -> None:
    """The fast path runs here (PyNaCl's wheel exports the function); the cases below test it."""
    assert crypto._VERIFY_DETACHED is not None


def test_the_reference_curve_agrees_with_libsodium() -> None:
    key = KeyPair.from_rng(random.Random(7))
    a = _scalar(key.seed)
    assert _encode(_mul(a, B)) == key.public_key
    assert _encode(_mul(8, T8)) == _encode((0, 1, 1, 0))
    r = 12345
    sig = _sign(a, key.public_key, r, _mul(r, B), signing_bytes(DOMAIN, b"m"))
    assert _same(key.public_key, b"m", sig)


@pytest.mark.parametrize("message", [b"", b"\x00", b"m\x00m", bytes(range(256)) * 4])
def test_valid_and_tampered_signatures(message: bytes) -> None:
    key = KeyPair.from_rng(random.Random(len(message)))
    sig = key.sign(DOMAIN, message)
    assert _same(key.public_key, message, sig)
    assert not _same(key.public_key, message + b"x", sig)
    for i in (0, 31, 32, 63):
        bad = bytearray(sig)
        bad[i] ^= 1
        assert not _same(key.public_key, message, bytes(bad))
    other = KeyPair.from_rng(random.Random(99)).public_key
    assert not _same(other, message, sig)


def test_non_canonical_s_is_refused() -> None:
    """``S + L`` satisfies the equation mod L; libsodium (and ZIP-215) refuse ``S >= L``."""
    key = KeyPair.from_rng(random.Random(3))
    a, signed = _scalar(key.seed), signing_bytes(DOMAIN, b"m")
    r = 987654321
    assert _same(key.public_key, b"m", _sign(a, key.public_key, r, _mul(r, B), signed))
    assert not _same(
        key.public_key, b"m", _sign(a, key.public_key, r, _mul(r, B), signed, s_plus=L)
    )


def test_mixed_order_r_is_refused() -> None:
    """R = rB + T (T of order 8): the cofactored equation (ZIP-215, ed25519-zebra) accepts it, the
    cofactorless one (libsodium) does not."""
    key = KeyPair.from_rng(random.Random(4))
    a, signed = _scalar(key.seed), signing_bytes(DOMAIN, b"m")
    for r in (5, 77, 2**200 + 1):
        assert not _same(
            key.public_key, b"m", _sign(a, key.public_key, r, _add(_mul(r, B), T8), signed)
        )


@pytest.mark.parametrize("small", SMALL_ORDER)
def test_small_order_r_and_keys_are_refused(small: bytes) -> None:
    key = KeyPair.from_rng(random.Random(5))
    sig = key.sign(DOMAIN, b"m")
    assert not _same(key.public_key, b"m", small + sig[32:])
    # a small-order key with R = sB: "valid" for any message under a naive equation check
    s = 4242
    assert not _same(small, b"m", _encode(_mul(s, B)) + s.to_bytes(32, "little"))


def test_non_canonical_key_is_refused() -> None:
    """A key whose y is written as y + p (only y < 19 can be): libsodium refuses it."""
    for y in range(2, 19):
        if _x(y, 0) is None:
            continue
        key = (y + P).to_bytes(32, "little")
        s = 99
        assert not _same(key, b"m", _encode(_mul(s, B)) + s.to_bytes(32, "little"))


def test_mixed_order_key_agrees_both_ways() -> None:
    """A = aB + T: libsodium accepts such a key; a signature verifies (cofactorless) exactly when
    h·T vanishes (h ≡ 0 mod 8). Both answers occur; both must match PyNaCl's."""
    a = _scalar(bytes(range(32)))
    key = _encode(_add(_mul(a, B), T8))
    seen = set()
    for i in range(64):
        message = b"m%d" % i
        signed = signing_bytes(DOMAIN, message)
        r = 1000 + i
        sig = _sign(a, key, r, _mul(r, B), signed)
        answer = _same(key, message, sig)
        assert answer == (_h(sig[:32], key, signed) % 8 == 0)
        seen.add(answer)
    assert seen == {True, False}


def test_wrong_lengths_are_refused_before_ed25519() -> None:
    key = KeyPair.from_rng(random.Random(6))
    sig = key.sign(DOMAIN, b"m")
    assert not verify(key.public_key[:31], DOMAIN, b"m", sig)
    assert not verify(key.public_key, DOMAIN, b"m", sig + b"\x00")
    assert not verify(key.public_key, DOMAIN, b"m", sig[:63])


def test_other_bytes_types_are_answered_as_pynacl_does() -> None:
    """Not ``bytes`` (a bytearray, a memoryview): the direct call cannot take them, PyNaCl's path
    answers (what it answered before the direct call existed), never an exception."""
    key = KeyPair.from_rng(random.Random(8))
    sig = key.sign(DOMAIN, b"m")
    for k, m, s in (
        (bytearray(key.public_key), b"m", sig),
        (key.public_key, b"m", bytearray(sig)),
        (key.public_key, memoryview(b"m"), sig),
        (key.public_key, bytearray(b"m"), memoryview(sig)),
    ):
        assert verify(k, DOMAIN, m, s) == crypto._verify_pynacl(k, signing_bytes(DOMAIN, m), s)
    assert verify(key.public_key, DOMAIN, bytearray(b"m"), sig)


# --- signing: the direct call gives PyNaCl's bytes ------------------------------------------------


def test_the_direct_signing_call_is_in_use() -> None:
    assert crypto._SIGN_DETACHED is not None


@pytest.mark.parametrize("message", [b"", b"\x00", b"m\x00m", bytes(range(256)) * 40])
def test_signatures_are_pynacls_byte_for_byte(message: bytes) -> None:
    rng = random.Random(11)
    for _ in range(20):
        key = KeyPair.from_rng(rng)
        sig = key.sign(DOMAIN, message)
        signed = signing_bytes(DOMAIN, message)
        assert sig == crypto._sign_pynacl(signed, key._secret)
        assert sig == nacl.signing.SigningKey(key.seed).sign(signed).signature
        assert verify(key.public_key, DOMAIN, message, sig)


def test_signing_falls_back_to_pynacl_without_the_direct_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = KeyPair.from_rng(random.Random(12))
    direct = key.sign(DOMAIN, b"m")
    monkeypatch.setattr(crypto, "_SIGN_DETACHED", None)
    assert key.sign(DOMAIN, b"m") == direct
    # no library, or a library without the symbol: no direct call
    for name in ("crypto_sign_detached", "crypto_sign_verify_detached"):
        assert crypto._sodium_function(None, name, []) is None
    assert crypto._sodium_function(crypto._SODIUM, "no_such_function", []) is None


def test_signing_from_threads_gives_each_caller_its_own_signature() -> None:
    """The direct call releases the GIL: concurrent signers never see each other's bytes."""
    keys = [KeyPair.from_rng(random.Random(i)) for i in range(8)]
    jobs = [(k, bytes([i % 256]) * (i % 97)) for i in range(2_000) for k in keys[i % 8 : i % 8 + 1]]
    with ThreadPoolExecutor(4) as pool:
        sigs = list(pool.map(lambda job: job[0].sign(DOMAIN, job[1]), jobs))
    for (k, m), sig in zip(jobs, sigs, strict=True):
        assert sig == crypto._sign_pynacl(signing_bytes(DOMAIN, m), k._secret)
