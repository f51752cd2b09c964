"""The cryptography of a round: X25519 key agreement, HKDF-SHA256, ChaCha20 masks, ChaCha20-Poly1305 shares.

Every derived key is HKDF-SHA256 of an X25519 shared secret with an ``info`` that binds the protocol version,
the purpose, the round and the client ids, so a key is used for one thing in one round only:

- a pairwise mask seed: both ends of a pair derive the same 32 bytes (the pair in sorted order);
- a share-encryption key: one per *direction* (sender, recipient), so the two messages a pair exchange are
  never encrypted under the same key and the fixed nonce is never reused.

A mask is the ChaCha20 keystream under the full 32-byte seed (zero nonce: each seed expands once), read as
little-endian uint32 words; adding and subtracting masks wraps modulo 2^32 (numpy uint32 arithmetic).
:func:`apply_masks` adds many masks to one vector in place: each keystream is read as a uint32 view of the
cipher's output (no copy, no Python loop per element).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from consortium.fl.privacy.secagg.errors import BadKeys, BadShare

RandomBytes = Callable[[int], bytes]
KEY_BYTES = 32
PROTOCOL = b"consortium-secagg/1"
_ZERO_NONCE_16 = bytes(16)
_ZERO_NONCE_12 = bytes(12)


def new_private_key(random_bytes: RandomBytes) -> X25519PrivateKey:
    """An X25519 private key from 32 bytes of ``random_bytes`` (``os.urandom`` outside tests)."""
    return X25519PrivateKey.from_private_bytes(random_bytes(KEY_BYTES))


def private_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32 bytes of a private key (what is secret-shared)."""
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``key``."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _info(purpose: bytes, round_id: int, *ids: str) -> bytes:
    parts = [PROTOCOL, purpose, str(round_id).encode(), *(i.encode() for i in ids)]
    return b"\x1f".join(parts)


def exchange(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """The raw X25519 shared secret with ``peer_public`` (only ever used through :func:`derive`).

    BadKeys when the peer's key is not a usable X25519 public key (a low-order point gives an all-zero secret,
    which cryptography refuses)."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise BadKeys(f"key agreement failed: {exc}") from None


def derive(secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 of a shared secret: 32 bytes bound to ``info``."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)


def pair_seed(private: X25519PrivateKey, peer_public: bytes, round_id: int, me: str, peer: str) -> bytes:
    """The pairwise mask seed of ``me`` and ``peer`` (the same at both ends)."""
    low, high = sorted((me, peer))
    return derive(exchange(private, peer_public), _info(b"pair-mask", round_id, low, high))


def share_key(secret: bytes, round_id: int, sender: str, recipient: str) -> bytes:
    """The key that encrypts ``sender``'s shares for ``recipient`` in this round, from the X25519 secret of
    their cipher keys (:func:`exchange`; one secret serves both directions, the keys differ)."""
    return derive(secret, _info(b"share-encryption", round_id, sender, recipient))


def _keystream(seed: bytes, zeros: bytes) -> np.ndarray:
    """The ChaCha20 keystream under ``seed`` over ``zeros`` (4 bytes a word), a read-only uint32 view."""
    if len(seed) != KEY_BYTES:
        raise ValueError(f"a mask seed has {KEY_BYTES} bytes, got {len(seed)}")
    encryptor = Cipher(algorithms.ChaCha20(seed, _ZERO_NONCE_16), mode=None).encryptor()
    return np.frombuffer(encryptor.update(zeros), dtype="<u4")


def expand(seed: bytes, length: int) -> np.ndarray:
    """``length`` uint32 words of the ChaCha20 keystream keyed by the 32-byte ``seed`` (read-only)."""
    return _keystream(seed, bytes(4 * length))


def pair_sign(me: str, peer: str) -> int:
    """+1 when ``me`` adds the pair's mask, -1 when it subtracts it (the lower id adds)."""
    return 1 if me < peer else -1


def add_mask(vector: np.ndarray, seed: bytes, sign: int) -> np.ndarray:
    """``vector + sign * expand(seed)`` modulo 2^32 (a new array)."""
    total = np.array(vector, dtype=np.uint32)
    apply_masks(total, [(seed, sign)])
    return total


def apply_masks(total: np.ndarray, signed_seeds: Iterable[tuple[bytes, int]]) -> None:
    """``total += sign * expand(seed)`` modulo 2^32 for each ``(seed, sign)``, in place (``total``: a
    writable 1-d uint32 array)."""
    if total.dtype != np.uint32 or total.ndim != 1 or not total.flags.writeable:
        raise ValueError("masks apply in place to a writable 1-d uint32 array")
    zeros = bytes(4 * total.shape[0])
    for seed, sign in signed_seeds:
        mask = _keystream(seed, zeros)
        if sign > 0:
            np.add(total, mask, out=total)
        else:
            np.subtract(total, mask, out=total)


def _aad(round_id: int, sender: str, recipient: str) -> bytes:
    return _info(b"share-message", round_id, sender, recipient)


def seal(key: bytes, plaintext: bytes, round_id: int, sender: str, recipient: str) -> bytes:
    """``plaintext`` encrypted and authenticated with ChaCha20-Poly1305 under a single-use ``key``; the round
    and both ids are authenticated, so a share moved to another round or pair is detected."""
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE_12, plaintext, _aad(round_id, sender, recipient))


def open_sealed(key: bytes, ciphertext: bytes, round_id: int, sender: str, recipient: str) -> bytes:
    """The plaintext of :func:`seal`; BadShare when it was altered, replayed from elsewhere or misrouted."""
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE_12, ciphertext, _aad(round_id, sender, recipient))
    except InvalidTag:
        raise BadShare(f"the share message from {sender!r} to {recipient!r} does not authenticate") from None


def share_commitment(round_id: int, owner: str, holder: str, secret: str, share: bytes) -> str:
    """SHA-256 commitment (hex) to the share of ``owner``'s ``secret`` that ``holder`` keeps: the server checks
    a revealed share against it, so a wrong or swapped share is refused. A share is a uniform 521-bit field
    element, so the digest hides it."""
    return hashlib.sha256(_info(b"share-commitment", round_id, owner, holder, secret) + b"\x1f" + share).hexdigest()
