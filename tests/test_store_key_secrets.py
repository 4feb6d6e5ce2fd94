"""Secrets inside a key's settings (an Azure key's Entra ID client secret, Bedrock's secret
key and session token, Vertex's service-account JSON) are secrets like a key's value (issue
14): sealed in the config store, opened on read, re-sealed by key rotation, never shown by
the API."""

from __future__ import annotations

import json

import msgspec
import pytest

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


SECRET_ACCESS = "aws-secret-access-key-Zp93/x"
SESSION = "aws-session-token-FQoGZXIvYXdzEJr"
SERVICE_ACCOUNT = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----sa-key-material"}'


@pytest.mark.parametrize("as_object", [False, True])
async def test_bedrock_and_vertex_credentials_are_sealed_at_rest_and_opened_on_read(store_config, tmp_path, as_object):
    bedrock = msgspec.convert({"keys": [{"name": "aws", "value": "", "bedrock_key_config": {
        "access_key": "AKIAEXAMPLE", "secret_key": SECRET_ACCESS, "session_token": SESSION,
        "region": "us-east-1"}}]}, ProviderConfig)
    vertex = msgspec.convert({"keys": [{"name": "gcp", "value": "", "vertex_key_config": {
        "project_id": "p-1", "region": "us-central1",
        "auth_credentials": json.loads(SERVICE_ACCOUNT) if as_object else SERVICE_ACCOUNT}}]}, ProviderConfig)
    store = await open_store(store_config, tmp_path, "correct horse battery staple")
    try:
        await store.providers.sync_from_file({"bedrock": bedrock, "vertex": vertex})
        at_rest = " ".join(r["config"] for r in await store.db.fetch("SELECT config FROM provider_keys"))
        for secret in (SECRET_ACCESS, SESSION, "sa-key-material"):
            assert secret not in at_rest
        assert "AKIAEXAMPLE" in at_rest and "p-1" in at_rest  # identifiers stay readable
        providers = await store.providers.all()
        aws = providers["bedrock"].keys[0].bedrock_key_config
        assert (aws.secret_key, aws.session_token) == (SECRET_ACCESS, SESSION)
        opened = providers["vertex"].keys[0].vertex_key_config.auth_credentials  # the object comes back as its text
        assert json.loads(opened) == json.loads(SERVICE_ACCOUNT)
    finally:
        await store.close()


PROXY_PASSWORD = "proxy-pass-Lq8#2"
PROXY_URL = "http://relay-user:url-pass-5Tx@proxy.internal:3128"


def proxied() -> ProviderConfig:
    return msgspec.convert({"keys": [{"name": "k", "value": "sk-proxied"}], "proxy_config": {
        "type": "http", "url": PROXY_URL, "username": "proxy-user", "password": PROXY_PASSWORD}}, ProviderConfig)


async def stored_provider(store) -> str:
    return await store.db.fetchval("SELECT config FROM providers")


async def test_a_providers_proxy_password_and_url_are_sealed_at_rest_and_opened_on_read(store_config, tmp_path):
    store = await open_store(store_config, tmp_path, "correct horse battery staple")
    try:
        await store.providers.sync_from_file({"openai": proxied()})
        row = await stored_provider(store)
        assert PROXY_PASSWORD not in row and "url-pass-5Tx" not in row and "rbenc:" in row
        assert '"proxy-user"' in row  # the user name is no secret
        proxy = (await store.providers.all())["openai"].proxy_config
        assert (proxy.password, proxy.url, proxy.username) == (PROXY_PASSWORD, PROXY_URL, "proxy-user")
    finally:
        await store.close()


async def test_a_plaintext_stores_proxy_password_is_sealed_when_a_key_appears_and_resealed_by_rotation(store_config, tmp_path):
    store = await open_store(store_config, tmp_path, None)
    await store.providers.sync_from_file({"openai": proxied()})
    assert PROXY_PASSWORD in await stored_provider(store)
    await store.close()
    store = await open_store(store_config, tmp_path, "first-key")
    sealed_first = await stored_provider(store)
    await store.close()
    assert PROXY_PASSWORD not in sealed_first
    db = open_database(msgspec.convert(store_config, StoreConfig), tmp_path, "config.db")
    await db.open()
    assert await rotate_key(db, "first-key", "second-key") == 3  # the key's value, the proxy's password and URL
    await db.close()
    store = await open_store(store_config, tmp_path, "second-key")
    try:
        assert await stored_provider(store) != sealed_first
        assert (await store.providers.all())["openai"].proxy_config.password == PROXY_PASSWORD
    finally:
        await store.close()
