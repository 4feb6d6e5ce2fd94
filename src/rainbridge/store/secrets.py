"""Which columns hold secrets, and turning encryption on, checking it, and rotating its key."""

from __future__ import annotations

import base64
import json
import logging

from .crypto import Cipher, DecryptionError, is_encrypted, new_salt
from .db import Database, Executor

log = logging.getLogger("rainbridge.store")

# (table, id column, secret column): every secret the config store keeps in a column of its own.
SECRET_COLUMNS = [("provider_keys", "id", "value")]
# Secrets inside a key's settings (provider_keys.config, a JSON document): (section, field).
SECRET_KEY_FIELDS = [
    ("azure_key_config", "client_secret"),
    ("bedrock_key_config", "secret_key"),
    ("bedrock_key_config", "session_token"),
    ("vertex_key_config", "auth_credentials"),
]

# Secrets inside a provider's own settings (providers.config): the proxy's password, and its
# URL (it may carry user:password@).
SECRET_PROVIDER_FIELDS = [
    ("proxy_config", "password"),
    ("proxy_config", "url"),
]


class EncryptionKeyError(Exception):
    """The encryption key is missing, or does not match the data."""


class Secrets:
    """Seals secrets before they are written and opens them after they are read."""

    def __init__(self, cipher: Cipher | None):
        self.cipher = cipher

    @property
    def enabled(self) -> bool:
        return self.cipher is not None

    def seal(self, value: str, table: str, row_id: str) -> str:
        if self.cipher is None:
            return value
        return self.cipher.encrypt(value, f"{table}:{row_id}")

    def open(self, stored: str, table: str, row_id: str) -> str:
        if not is_encrypted(stored):
            return stored
        if self.cipher is None:
            raise EncryptionKeyError("the store holds encrypted secrets but no encryption key is set")
        try:
            return self.cipher.decrypt(stored, f"{table}:{row_id}")
        except DecryptionError as exc:
            raise EncryptionKeyError(f"{table} {row_id}: {exc}") from None


ENCRYPTION_LOCK_ID = 7_351_003  # next to the migration locks (store/migrate.py)


async def _meta(tx: Executor, key: str) -> str | None:
    return await tx.fetchval("SELECT value FROM rb_meta WHERE key = $1", key)


async def _set_meta(tx: Executor, key: str, value: str) -> None:
    await tx.execute(
        "INSERT INTO rb_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        key, value,
    )


def seal_key_fields(secrets: Secrets, config: dict, key_id: str) -> dict:
    """A key's settings with its secret fields sealed (the input is left as it is)."""
    return _map_fields(config, SECRET_KEY_FIELDS, "provider_keys", lambda value, table: secrets.seal(value, table, key_id))


def open_key_fields(secrets: Secrets, config: dict, key_id: str) -> dict:
    return _map_fields(config, SECRET_KEY_FIELDS, "provider_keys", lambda value, table: secrets.open(value, table, key_id))


def seal_provider_fields(secrets: Secrets, config: dict, name: str) -> dict:
    """A provider's settings with its secret fields sealed (the input is left as it is)."""
    return _map_fields(config, SECRET_PROVIDER_FIELDS, "providers", lambda value, table: secrets.seal(value, table, name))


def open_provider_fields(secrets: Secrets, config: dict, name: str) -> dict:
    return _map_fields(config, SECRET_PROVIDER_FIELDS, "providers", lambda value, table: secrets.open(value, table, name))


def _map_fields(config: dict, fields: list[tuple[str, str]], table: str, apply) -> dict:
    out = dict(config)
    for section, field in fields:
        inner = out.get(section)
        if not isinstance(inner, dict) or not inner.get(field):
            continue
        value = inner[field]
        if isinstance(value, dict):  # a JSON object (Vertex's service-account key): kept as its text
            value = json.dumps(value)
        if isinstance(value, str):
            inner = out[section] = {**inner, field: apply(value, f"{table}.{section}.{field}")}
    return out


async def _reseal_all(tx: Executor, old: Secrets, new: Secrets) -> int:
    count = 0
    for table, id_col, col in SECRET_COLUMNS:
        rows = await tx.fetch(f"SELECT {id_col} AS id, {col} AS value FROM {table}")
        for row in rows:
            plain = old.open(row["value"], table, row["id"])
            await tx.execute(f"UPDATE {table} SET {col} = $1 WHERE {id_col} = $2", new.seal(plain, table, row["id"]), row["id"])
            count += 1
    count += await _reseal_settings(tx, "provider_keys", "id", SECRET_KEY_FIELDS, old, new)
    count += await _reseal_settings(tx, "providers", "name", SECRET_PROVIDER_FIELDS, old, new)
    return count


async def _reseal_settings(tx: Executor, table: str, id_col: str, fields: list[tuple[str, str]],
                           old: Secrets, new: Secrets) -> int:
    """Re-seal the secrets inside ``table``'s JSON ``config`` column (key or provider settings)."""
    count = 0
    for row in await tx.fetch(f"SELECT {id_col} AS id, config FROM {table}"):
        rid, config = row["id"], json.loads(row["config"])
        opened = _map_fields(config, fields, table, lambda value, t, rid=rid: old.open(value, t, rid))
        sealed = _map_fields(opened, fields, table, lambda value, t, rid=rid: new.seal(value, t, rid))
        if sealed != config:
            await tx.execute(f"UPDATE {table} SET config = $1 WHERE {id_col} = $2", json.dumps(sealed), rid)
            count += sum(1 for section, field in fields if (config.get(section) or {}).get(field))
    return count


async def setup_encryption(db: Database, passphrase: str | None) -> Secrets:
    """Return the store's ``Secrets``; refuse a wrong or missing key (never decrypt garbage).

    First start with a key on a plaintext store: derive, record the salt and a check value,
    and encrypt the secrets already there, in one transaction. That transaction holds a lock
    (PostgreSQL advisory, SQLite BEGIN IMMEDIATE): replicas starting together on a fresh
    store (a Deployment of 3) would otherwise each pick a salt, and one would read the
    secrets another just sealed as if they were plaintext.
    """
    async with db.exclusive(ENCRYPTION_LOCK_ID) as tx:
        salt_b64 = await _meta(tx, "encryption_salt")
        check = await _meta(tx, "encryption_check")
        if check is None:
            if not passphrase:
                log.warning("no encryption key set (RAINBRIDGE_ENCRYPTION_KEY): secrets are stored in plaintext")
                return Secrets(None)
            salt = new_salt()
            cipher = Cipher.from_passphrase(passphrase, salt)
            secrets = Secrets(cipher)
            sealed = await _reseal_all(tx, Secrets(None), secrets)
            await _set_meta(tx, "encryption_salt", base64.b64encode(salt).decode())
            await _set_meta(tx, "encryption_check", cipher.check_value())
            if sealed:
                log.info("encrypted %d secret(s) already in the store", sealed)
            return secrets
        if not passphrase:
            raise EncryptionKeyError(
                "the store's secrets are encrypted: set RAINBRIDGE_ENCRYPTION_KEY (or encryption_key in the config)"
            )
        cipher = Cipher.from_passphrase(passphrase, base64.b64decode(salt_b64 or ""))
        if not cipher.verifies(check):
            raise EncryptionKeyError(
                "the encryption key does not match the data in the store; use the key the data was "
                "written with, or `rainbridge store rotate-key --old OLD --new NEW`"
            )
        return Secrets(cipher)


async def rotate_key(db: Database, old_passphrase: str | None, new_passphrase: str) -> int:
    """Re-encrypt every secret under a new key in one transaction; return how many."""
    async with db.transaction() as tx:
        salt_b64 = await _meta(tx, "encryption_salt")
        check = await _meta(tx, "encryption_check")
        if check is None:
            old = Secrets(None)
        else:
            if not old_passphrase:
                raise EncryptionKeyError("--old is required: the store is encrypted")
            old_cipher = Cipher.from_passphrase(old_passphrase, base64.b64decode(salt_b64 or ""))
            if not old_cipher.verifies(check):
                raise EncryptionKeyError("--old does not match the data in the store")
            old = Secrets(old_cipher)
        salt = new_salt()
        new_cipher = Cipher.from_passphrase(new_passphrase, salt)
        count = await _reseal_all(tx, old, Secrets(new_cipher))
        await _set_meta(tx, "encryption_salt", base64.b64encode(salt).decode())
        await _set_meta(tx, "encryption_check", new_cipher.check_value())
    return count
