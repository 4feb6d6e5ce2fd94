"""An Azure key's Entra ID client secret is a secret like a key's value (issue 14): sealed in
the config store, opened on read, re-sealed by key rotation, never shown by the API."""

from __future__ import annotations

import msgspec

from rainbridge.config.schema import KeyConfig, ProviderConfig, StoreConfig
from rainbridge.server.api.providers import _present_key
from rainbridge.store import ConfigStore, open_database
from rainbridge.store.secrets import rotate_key

CLIENT_SECRET = "entra-client-secret-7Qz~9f"


def azure() -> ProviderConfig:
    return msgspec.convert({"keys": [{"name": "sp", "value": "", "azure_key_config": {
        "endpoint": "https://x.openai.azure.com", "client_id": "app-1", "tenant_id": "tenant-1",
        "client_secret": CLIENT_SECRET}}]}, ProviderConfig)


async def open_store(store_config, tmp_path, passphrase):
    db = open_database(msgspec.convert(store_config, StoreConfig), tmp_path, "config.db")
    return await ConfigStore.open(db, passphrase, wait_s=5)


async def stored_config(store) -> str:
    return await store.db.fetchval("SELECT config FROM provider_keys")


async def test_client_secret_is_sealed_at_rest_and_opened_on_read(store_config, tmp_path):
    store = await open_store(store_config, tmp_path, "correct horse battery staple")
    try:
        await store.providers.sync_from_file({"azure": azure()})
        assert CLIENT_SECRET not in await stored_config(store) and "rbenc:" in await stored_config(store)
        key = (await store.providers.all())["azure"].keys[0]
        assert (key.azure_key_config.client_secret, key.azure_key_config.client_id) == (CLIENT_SECRET, "app-1")
    finally:
        await store.close()


async def test_a_plaintext_store_seals_the_client_secret_when_a_key_appears_and_rotation_reseals_it(store_config, tmp_path):
    store = await open_store(store_config, tmp_path, None)
    await store.providers.sync_from_file({"azure": azure()})
    assert CLIENT_SECRET in await stored_config(store)
    await store.close()
    store = await open_store(store_config, tmp_path, "first-key")
    sealed_first = await stored_config(store)
    await store.close()
    assert CLIENT_SECRET not in sealed_first
    db = open_database(msgspec.convert(store_config, StoreConfig), tmp_path, "config.db")
    await db.open()
    assert await rotate_key(db, "first-key", "second-key") == 2  # the value and the client secret
    await db.close()
    store = await open_store(store_config, tmp_path, "second-key")
    try:
        assert await stored_config(store) != sealed_first
        assert (await store.providers.all())["azure"].keys[0].azure_key_config.client_secret == CLIENT_SECRET
    finally:
        await store.close()


def test_the_api_shows_the_client_secret_only_as_set():
    shown = _present_key(msgspec.convert(msgspec.to_builtins(azure().keys[0]), KeyConfig))
    assert shown["azure_key_config"]["client_secret"] == "…" and shown["azure_key_config"]["client_id"] == "app-1"
