"""Secrets at rest: AES-256-GCM with a key derived from a passphrase.

Stored form: ``rbenc:`` + base64(version byte | 12-byte nonce | ciphertext+tag), with the
record's id as associated data, so a value copied onto another row does not decrypt. The
key is derived with Argon2id from the passphrase and a random salt kept in the database; a
check value (a known text encrypted with the key) tells a wrong passphrase apart from
corrupt data, so the gateway refuses to start rather than decrypt to garbage.
"""

from __future__ import annotations

import base64
import os

from ..aead import aesgcm

PREFIX = "rbenc:"
VERSION = 1
CHECK_TEXT = "rainbridge-encryption-check"
CHECK_AAD = "rb_meta:encryption_check"


class DecryptionError(Exception):
    """A value did not decrypt with this key (wrong key or tampered data)."""


def derive_key(passphrase: str, salt: bytes) -> bytes:
    # Imported here: only a gateway with encryption on loads cryptography (see ..aead).
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    # OWASP's Argon2id minimum (19 MiB, t=2, p=1): ~30 ms, paid once per process start.
    kdf = Argon2id(salt=salt, length=32, iterations=2, lanes=1, memory_cost=19 * 1024)
    return kdf.derive(passphrase.encode("utf-8"))


def new_salt() -> bytes:
    return os.urandom(16)


def is_encrypted(value: str) -> bool:
    return value.startswith(PREFIX)


class Cipher:
    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError("AES-256 needs a 32-byte key")
        aead_class, self._invalid_tag = aesgcm()
        self._aead = aead_class(key)

    @classmethod
    def from_passphrase(cls, passphrase: str, salt: bytes) -> Cipher:
        return cls(derive_key(passphrase, salt))

    def encrypt(self, plaintext: str, aad: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), aad.encode("utf-8"))
        return PREFIX + base64.b64encode(bytes([VERSION]) + nonce + sealed).decode("ascii")

    def decrypt(self, stored: str, aad: str) -> str:
        if not is_encrypted(stored):
            raise DecryptionError("value is not encrypted")
        try:
            raw = base64.b64decode(stored[len(PREFIX):], validate=True)
        except ValueError:
            raise DecryptionError("value is not valid base64") from None
        if len(raw) < 1 + 12 + 16 or raw[0] != VERSION:
            raise DecryptionError(f"unknown encryption format (version byte {raw[:1].hex() or 'missing'})")
        try:
            return self._aead.decrypt(raw[1:13], raw[13:], aad.encode("utf-8")).decode("utf-8")
        except self._invalid_tag:
            raise DecryptionError("value does not decrypt with this key") from None

    def check_value(self) -> str:
        return self.encrypt(CHECK_TEXT, CHECK_AAD)

    def verifies(self, check_value: str) -> bool:
        try:
            return self.decrypt(check_value, CHECK_AAD) == CHECK_TEXT
        except DecryptionError:
            return False
