"""Authenticated encryption for everything nodes say to each other.

Gossip packets, push-pull streams and Raft messages are sealed with AES-256-GCM under
the cluster key. A keyring holds one primary key (used to seal) and any number of
secondary keys (also tried when opening) so that a key can be rotated without a
flag day: first add the new key everywhere as secondary, then make it primary, then
drop the old one (memberlist's keyring works the same way).

Wire form of a sealed message: ``version(1) | nonce(12) | ciphertext+tag``. The
version byte is authenticated as associated data together with the caller's ``aad``
(which callers use to bind a message to its channel, e.g. b"gossip" or b"raft"), so
a packet captured on one channel cannot be replayed on another.

Besides sealing, a keyring computes message authentication codes (:meth:`Keyring.mac`,
HMAC-SHA256) for proofs that must be bound to one connection, such as the broker-link
challenge (see :mod:`cluster.links`). The MAC key is derived from each cluster key with a
fixed label, so a MAC can never be confused with (or help forge) an AES-GCM seal.

This module never touches sockets; it only transforms bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path
from typing import Iterable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["DecryptError", "Keyring", "load_keyring", "new_key"]

#: Wire format version of sealed messages. Append-only: never reuse a number.
SEAL_VERSION = 1
NONCE_SIZE = 12
TAG_SIZE = 16
#: Bytes a sealed message adds to its plaintext.
OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE
KEY_SIZES = (16, 24, 32)
#: Label deriving the MAC key from a cluster key. Changing it invalidates every proof.
MAC_KEY_LABEL = b"rsbroker mac key v1"


class DecryptError(ValueError):
    """A sealed message failed to open: wrong key, tampered, truncated or unknown version."""


class Keyring:
    """One primary key to seal with, every key (primary first) to open with."""

    def __init__(self, keys: Iterable[bytes]) -> None:
        key_list = list(keys)
        if not key_list:
            raise ValueError("a keyring needs at least one key")
        for key in key_list:
            if len(key) not in KEY_SIZES:
                raise ValueError(f"cluster keys must be 16, 24 or 32 bytes, got {len(key)}")
        self._aeads = [AESGCM(k) for k in key_list]
        self._mac_keys = [hmac.digest(k, MAC_KEY_LABEL, "sha256") for k in key_list]

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Encrypt and authenticate ``plaintext`` under the primary key."""
        nonce = os.urandom(NONCE_SIZE)
        header = bytes((SEAL_VERSION,))
        return header + nonce + self._aeads[0].encrypt(nonce, plaintext, header + aad)

    def open(self, blob: bytes, aad: bytes = b"") -> bytes:
        """Verify and decrypt ``blob``, trying every key; raise DecryptError if none fits."""
        if len(blob) < OVERHEAD:
            raise DecryptError(f"sealed message too short ({len(blob)} bytes)")
        if blob[0] != SEAL_VERSION:
            raise DecryptError(f"unknown seal version {blob[0]}")
        nonce = bytes(blob[1 : 1 + NONCE_SIZE])
        body = bytes(blob[1 + NONCE_SIZE :])
        full_aad = bytes(blob[:1]) + aad
        for aead in self._aeads:
            try:
                return aead.decrypt(nonce, body, full_aad)
            except Exception:  # cryptography raises InvalidTag; any failure means "not this key"
                continue
        raise DecryptError("no key in the keyring opens this message (wrong cluster key or tampered)")


    def mac(self, label: bytes, *parts: bytes) -> bytes:
        """HMAC-SHA256 over ``label`` and ``parts`` under the primary key.

        Every part is length-prefixed, so ``("ab", "c")`` and ``("a", "bc")`` differ.
        """
        return _mac(self._mac_keys[0], label, parts)

    def verify_mac(self, tag: bytes, label: bytes, *parts: bytes) -> bool:
        """Whether ``tag`` is the MAC of ``label``/``parts`` under any key of the ring."""
        return any(hmac.compare_digest(tag, _mac(key, label, parts)) for key in self._mac_keys)


def _mac(key: bytes, label: bytes, parts: tuple[bytes, ...]) -> bytes:
    digest = hmac.new(key, digestmod=hashlib.sha256)
    for part in (label, *parts):
        digest.update(len(part).to_bytes(4, "big") + part)
    return digest.digest()


def new_key() -> str:
    """A fresh 32-byte key, base64-encoded as key files hold it."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


def load_keyring(path: str | Path) -> Keyring:
    """Read a key file: one base64 key per line, primary first; blank lines and # comments ignored."""
    keys: list[bytes] = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            keys.append(base64.b64decode(text, validate=True))
        except Exception as exc:
            raise ValueError(f"{path}:{lineno}: not a base64 key ({exc})") from None
    return Keyring(keys)
