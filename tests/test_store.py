"""The config store on SQLite and PostgreSQL: migrations, encryption at rest, key rotation."""

import asyncio
import subprocess
import sys

import msgspec
import pytest

from rainbridge.config.schema import ProviderConfig, StoreConfig
from rainbridge.store import ConfigStore, EncryptionKeyError, SchemaError, open_database
from rainbridge.store.migrate import check, migrate, migrations
from rainbridge.store.secrets import rotate_key

SECRET = "sk-very-secret-provider-key-4f9a2c"


def db_for(store_config, tmp_path):
    return open_database(msgspec.convert(store_config, StoreConfig), tmp_path, "config.db")


def provider(value=SECRET):
    return msgspec.convert({"keys": [{"name": "main", "value": value, "models": ["gpt-4o"], "weight": 2}], "network_config": {"base_url": "http://127.0.0.1:9"}}, ProviderConfig)


async def open_store(store_config, tmp_path, passphrase=None):
    return await ConfigStore.open(db_for(store_config, tmp_path), passphrase, wait_s=5)


async def test_migrations_apply_once_and_record_versions(store_config, tmp_path):
    db = db_for(store_config, tmp_path)
    await db.open()
    try:
        first = await migrate(db, "config")
        second = await migrate(db, "config")
        assert first == [m.version for m in migrations("config", db.dialect)] and second == []
        rows = await db.fetch("SELECT component, version FROM schema_migrations ORDER BY version")
        assert [(r["component"], r["version"]) for r in rows] == [("config", v) for v in first]
        await check(db, "config")
    finally:
        await db.close()


async def test_newer_schema_is_refused(store_config, tmp_path):
    db = db_for(store_config, tmp_path)
    await db.open()
    try:
        await migrate(db, "config")
        await db.execute("INSERT INTO schema_migrations (component, version, name, applied_at) VALUES ('config', 999, 'future', 0)")
        with pytest.raises(SchemaError, match="newer than this rainbridge knows"):
            await migrate(db, "config")
        with pytest.raises(SchemaError, match="newer"):
            await check(db, "config")
    finally:
        await db.close()


async def test_behind_schema_fails_the_check(store_config, tmp_path):
    db = db_for(store_config, tmp_path)
    await db.open()
    try:
        with pytest.raises(SchemaError, match="behind"):
            await check(db, "config")
    finally:
        await db.close()


async def test_provider_keys_round_trip_encrypted(store_config, tmp_path):
    store = await open_store(store_config, tmp_path, "correct horse battery staple")
    try:
        await store.providers.sync_from_file({"openai": provider()})
        got = await store.providers.all()
        assert got["openai"].keys[0].value == SECRET
        assert got["openai"].keys[0].weight == 2 and got["openai"].keys[0].models == ["gpt-4o"]
        raw = await store.db.fetchval("SELECT value FROM provider_keys")
        assert raw.startswith("rbenc:") and SECRET not in raw
    finally:
        await store.close()


async def test_wrong_key_is_refused_and_missing_key_too(store_config, tmp_path):
    store = await open_store(store_config, tmp_path, "key-one")
    await store.providers.sync_from_file({"openai": provider()})
    await store.close()
    with pytest.raises(EncryptionKeyError, match="does not match"):
        await open_store(store_config, tmp_path, "key-two")
    with pytest.raises(EncryptionKeyError, match="set RAINBRIDGE_ENCRYPTION_KEY"):
        await open_store(store_config, tmp_path, None)


async def test_plaintext_store_is_encrypted_when_a_key_appears(store_config, tmp_path):
    store = await open_store(store_config, tmp_path, None)
    await store.providers.sync_from_file({"openai": provider()})
    assert await store.db.fetchval("SELECT value FROM provider_keys") == SECRET
    await store.close()
    store = await open_store(store_config, tmp_path, "now-encrypted")
    try:
        assert (await store.db.fetchval("SELECT value FROM provider_keys")).startswith("rbenc:")
        assert (await store.providers.all())["openai"].keys[0].value == SECRET
    finally:
        await store.close()


async def test_replicas_starting_together_with_a_key_all_open_the_store_under_one_salt(store_config, tmp_path):
    """A Deployment of N on a fresh store: every replica sets up encryption at once. Each
    must open the store, and all with the same salt (one would otherwise read the secrets
    another had just sealed as plaintext, or pick its own salt)."""
    store = await open_store(store_config, tmp_path, None)
    await store.providers.sync_from_file({"openai": provider()})
    await store.close()
    stores = await asyncio.gather(*(open_store(store_config, tmp_path, "shared-key") for _ in range(6)),
                                  return_exceptions=True)
    try:
        assert not [s for s in stores if isinstance(s, BaseException)], stores
        for s in stores:
            assert (await s.providers.all())["openai"].keys[0].value == SECRET
        assert len({(await s.db.fetchval("SELECT value FROM rb_meta WHERE key = 'encryption_salt'")) for s in stores}) == 1
    finally:
        for s in stores:
            if not isinstance(s, BaseException):
                await s.close()


async def test_rotation_reencrypts_everything(store_config, tmp_path):
    store = await open_store(store_config, tmp_path, "old-key")
    await store.providers.sync_from_file({"openai": provider(), "other": provider("sk-second-secret-xyz")})
    await store.close()
    db = db_for(store_config, tmp_path)
    await db.open()
    with pytest.raises(EncryptionKeyError, match="--old does not match"):
        await rotate_key(db, "not-the-old-key", "new-key")
    assert await rotate_key(db, "old-key", "new-key") == 2
    await db.close()
    with pytest.raises(EncryptionKeyError):
        await open_store(store_config, tmp_path, "old-key")
    store = await open_store(store_config, tmp_path, "new-key")
    try:
        values = {name: pc.keys[0].value for name, pc in (await store.providers.all()).items()}
        assert values == {"openai": SECRET, "other": "sk-second-secret-xyz"}
    finally:
        await store.close()


async def test_a_value_moved_to_another_row_does_not_decrypt(store_config, tmp_path):
    store = await open_store(store_config, tmp_path, "k")
    try:
        await store.providers.sync_from_file({"a": provider("sk-aaaa-1111"), "b": provider("sk-bbbb-2222")})
        rows = await store.db.fetch("SELECT id, value FROM provider_keys ORDER BY id")
        await store.db.execute("UPDATE provider_keys SET value = $1 WHERE id = $2", rows[0]["value"], rows[1]["id"])
        with pytest.raises(EncryptionKeyError):
            await store.providers.all()
    finally:
        await store.close()


async def test_file_sync_keeps_api_providers_and_drops_removed_file_ones(store_config, tmp_path):
    store = await open_store(store_config, tmp_path, None)
    try:
        await store.providers.sync_from_file({"a": provider(), "b": provider()})
        async with store.db.transaction() as tx:
            await store.providers.upsert(tx, "from-api", provider(), "api")
        await store.providers.sync_from_file({"a": provider("sk-changed-value")})
        got = await store.providers.all()
        assert sorted(got) == ["a", "from-api"]
        assert got["a"].keys[0].value == "sk-changed-value"
    finally:
        await store.close()


async def test_failed_transaction_leaves_nothing(store_config, tmp_path):
    store = await open_store(store_config, tmp_path, None)
    try:
        with pytest.raises(RuntimeError):
            async with store.db.transaction() as tx:
                await store.providers.upsert(tx, "half", provider(), "api")
                raise RuntimeError("boom")
        assert await store.providers.all() == {}
    finally:
        await store.close()


def test_no_plaintext_secret_anywhere_in_the_database(store_config, tmp_path):
    asyncio.run(_fill(store_config, tmp_path))
    if store_config["type"] == "sqlite":
        blob = b"".join(p.read_bytes() for p in tmp_path.glob("config.db*"))
        assert SECRET.encode() not in blob
    else:
        dump = subprocess.run(["pg_dump", store_config["config"]["dsn"]], capture_output=True, text=True, timeout=60)
        assert dump.returncode == 0, dump.stderr
        assert "provider_keys" in dump.stdout and SECRET not in dump.stdout


async def _fill(store_config, tmp_path):
    store = await open_store(store_config, tmp_path, "dump-key")
    await store.providers.sync_from_file({"openai": provider()})
    await store.close()


def test_concurrent_migration_from_many_processes_runs_once(store_config, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(msgspec.json.encode({"config_store": store_config}).decode())
    procs = [
        subprocess.Popen([sys.executable, "-m", "rainbridge", "migrate", "--config", str(config), "--app-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    versions = [m.version for m in migrations("config", store_config["type"])]
    applied = ", ".join(str(v) for v in versions)
    assert sum(f"applied version(s) {applied}" in out for out in outputs) == 1, outputs
    assert sum("up to date" in out for out in outputs) == 7

    async def rows():
        db = db_for(store_config, tmp_path)
        await db.open()
        try:
            return await db.fetch("SELECT version FROM schema_migrations WHERE component = 'config'")
        finally:
            await db.close()

    assert sorted(r["version"] for r in asyncio.run(rows())) == versions


@pytest.mark.parametrize("component", ["config", "logs"])
def test_migration_versions_are_consecutive_and_the_same_on_both_engines(component):
    """Two branches adding the same version number would apply only one of the files."""
    by_engine = {d: [(m.version, m.name) for m in migrations(component, d)] for d in ("sqlite", "postgres")}
    assert by_engine["sqlite"] == by_engine["postgres"]
    assert [v for v, _ in by_engine["sqlite"]] == list(range(1, len(by_engine["sqlite"]) + 1))
