"""memberlist's keyring, AES-GCM payload layout and label header.

Encrypted payload (memberlist ``security.go`` ``encryptPayload``/``decryptPayload``)::

    [version: 1 byte] [nonce: 12 random bytes] [AES-GCM ciphertext + 16-byte tag]

* version 0: the plaintext is PKCS7-padded to 16 bytes before sealing (protocol 1 only);
* version 1: no padding. memberlist sends 0 when it speaks protocol 1, else 1
  (``Memberlist.encryptionVersion``); it decrypts both, trying every key in the ring.
* the key is 16, 24 or 32 bytes (AES-128/192/256); the first key of the ring encrypts.
* associated data: for packets the label (memberlist >= 0.3); for streams the 5-byte
  ``encryptMsg`` frame header followed by the label (``encryptLocalState``).

Label header (memberlist ``label.go``): ``[244] [length: 1 byte, 1..255] [label]``, the
outermost layer of a packet and the first bytes a dialer writes on a stream.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from ..aead import aesgcm
from .codec import WireError
from .messages import MessageType

VERSION_SIZE = 1
NONCE_SIZE = 12
TAG_SIZE = 16
BLOCK_SIZE = 16
LABEL_MAX_SIZE = 255
_KEY_SIZES = (16, 24, 32)


def encryption_overhead(version: int) -> int:
    """Bytes encryption may add (memberlist ``encryptOverhead``)."""
    return 45 if version == 0 else 29


def encrypted_length(version: int, size: int) -> int:
    """Exact sealed size of ``size`` plaintext bytes (memberlist ``encryptedLength``)."""
    padding = 0 if version >= 1 else BLOCK_SIZE - size % BLOCK_SIZE
    return VERSION_SIZE + NONCE_SIZE + size + padding + TAG_SIZE


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) not in _KEY_SIZES:
        raise ValueError("a gossip key must be 16, 24 or 32 bytes")  # never echo the key
    return bytes(key)


class Keyring:
    """AES-GCM keys: the primary (first) encrypts, every key decrypts.

    Rotation without dropped packets, as memberlist/Serf do it: ``add`` the new key on
    every node, then ``use`` it everywhere, then ``remove`` the old one.
    """

    def __init__(self, keys: list[bytes]) -> None:
        self._keys: list[bytes] = []
        self._ciphers: dict[bytes, Any] = {}  # key -> AESGCM
        for key in keys:
            self.add(key)

    @classmethod
    def from_base64(cls, keys: list[str]) -> Keyring:
        raw: list[bytes] = []
        for text in keys:
            try:
                raw.append(base64.b64decode(text, validate=True))
            except (binascii.Error, ValueError):
                raise ValueError("a gossip key is not valid base64") from None
        return cls(raw)

    @property
    def keys(self) -> list[bytes]:
        """All keys, primary first."""
        return list(self._keys)

    @property
    def primary(self) -> bytes | None:
        return self._keys[0] if self._keys else None

    def add(self, key: bytes) -> None:
        """Install a key for decryption (the first key installed becomes the primary)."""
        key = _check_key(key)
        if key not in self._ciphers:
            self._keys.append(key)
            self._ciphers[key] = aesgcm()[0](key)

    def use(self, key: bytes) -> None:
        """Make an installed key the primary (memberlist ``UseKey``)."""
        key = _check_key(key)
        if key not in self._ciphers:
            raise ValueError("cannot use a key that is not in the keyring")
        self._keys.remove(key)
        self._keys.insert(0, key)

    def remove(self, key: bytes) -> None:
        """Drop a key; the primary cannot be removed (memberlist ``RemoveKey``)."""
        key = _check_key(key)
        if self._keys and key == self._keys[0]:
            raise ValueError("cannot remove the primary key")
        if key in self._ciphers:
            self._keys.remove(key)
            del self._ciphers[key]

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring(<{len(self._keys)} keys>)"  # never the key bytes

    def seal(self, version: int, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt with the primary key in memberlist's layout."""
        if not self._keys:
            raise WireError("no_key", "the keyring is empty")
        if version == 0:
            pad = BLOCK_SIZE - len(plaintext) % BLOCK_SIZE
            plaintext = plaintext + bytes((pad,)) * pad
        elif version != 1:
            raise WireError("bad_encryption_version", str(version))
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._ciphers[self._keys[0]].encrypt(nonce, plaintext, aad or None)
        return bytes((version,)) + nonce + sealed

    def open(self, payload: bytes, aad: bytes) -> bytes:
        """Decrypt with any key; ``WireError`` if no key opens it."""
        if not payload:
            raise WireError("decrypt_failed", "empty payload")
        version = payload[0]
        if version > 1:
            raise WireError("decrypt_failed", f"unsupported encryption version {version}")
        if len(payload) < encrypted_length(version, 0):
            raise WireError("decrypt_failed", f"payload too small to decrypt: {len(payload)}")
        nonce = payload[VERSION_SIZE : VERSION_SIZE + NONCE_SIZE]
        sealed = payload[VERSION_SIZE + NONCE_SIZE :]
        for key in self._keys:
            try:
                plain = self._ciphers[key].decrypt(nonce, sealed, aad or None)
            except aesgcm()[1]:  # InvalidTag: not this key
                continue
            if version == 0:
                pad = plain[-1] if plain else 0
                if not 1 <= pad <= BLOCK_SIZE or pad > len(plain):
                    raise WireError("decrypt_failed", "bad padding")
                plain = plain[:-pad]
            return plain
        raise WireError("decrypt_failed", "no installed key could decrypt the message")


# -- label header ---------------------------------------------------------------------------


def label_header(label: str) -> bytes:
    """The ``hasLabelMsg`` prefix for ``label`` (empty label: no header)."""
    if not label:
        return b""
    raw = label.encode()
    if len(raw) > LABEL_MAX_SIZE:
        raise WireError("label_too_long", f"{len(raw)} bytes > {LABEL_MAX_SIZE}")
    return bytes((MessageType.HAS_LABEL, len(raw))) + raw


def split_label(data: bytes) -> tuple[str, int] | None:
    """(label, header length) of a labelled buffer, ``("", 0)`` if unlabelled, None if short.

    ``WireError`` for an empty label header (memberlist rejects it).
    """
    if not data or data[0] != MessageType.HAS_LABEL:
        return "", 0
    if len(data) < 2:
        return None
    size = data[1]
    if size < 1:
        raise WireError("bad_label", "label header cannot be empty when present")
    if len(data) < 2 + size:
        return None
    return bytes(data[2 : 2 + size]).decode("utf-8", "surrogateescape"), 2 + size


def check_label(received: str, ours: str, skip_inbound_check: bool) -> str:
    """memberlist's inbound rule; returns the label to use as associated data."""
    if skip_inbound_check:
        if received:
            raise WireError("label_mismatch", "unexpected double label header")
        return ours
    if received != ours:
        raise WireError("label_mismatch", f"unacceptable label {received!r}")
    return received
