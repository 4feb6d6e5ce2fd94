"""``rainbridge serve`` and the stores: clear refusals at start, bounded retries, key handling."""

import contextlib
import json
import sqlite3
import subprocess
import sys
import uuid

from support import http_json

TOKEN = "store-serve-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}


def serve(tmp_path, config, *args, env=None, timeout=60):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [sys.executable, "-m", "rainbridge", "serve", "--config", str(path), "--app-dir", str(tmp_path), "--port", "0", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def base_env(**extra):
    import os

    env = {k: v for k, v in os.environ.items() if not k.endswith("ENCRYPTION_KEY")}
    env.update(extra)
    return env


def test_unreachable_postgres_is_retried_then_a_clear_exit(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = {"config_store": {"type": "postgres", "config": {"host": "127.0.0.1", "port": port, "user": "rb", "password": "hunter2-secret", "db_name": "x"}}}
    out = serve(tmp_path, config, env=base_env(RAINBRIDGE_STORE_WAIT_SECONDS="2"))
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert text.count(f"store postgres://127.0.0.1:{port}/x unreachable (attempt") >= 2
    assert "gave up after" in text
    assert "hunter2-secret" not in text


def test_no_migrate_on_a_fresh_store_fails_clearly(tmp_path, store_config):
    out = serve(tmp_path, {"config_store": store_config}, "--no-migrate", env=base_env())
    assert out.returncode != 0
    assert "schema is behind" in out.stderr and "rainbridge migrate" in out.stderr


def test_wrong_encryption_key_refuses_to_start(tmp_path, store_config, start_gateway, mock):
    config = {"config_store": store_config, "providers": {"openai": {"keys": [{"value": "sk-abc-secret-123456"}], "network_config": {"base_url": mock.url}}}}
    gw = start_gateway(config, env=base_env(RAINBRIDGE_ENCRYPTION_KEY="first-key"))
    status, _, _ = http_json("POST", gw.url + "/v1/chat/completions", {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert status == 200
    gw.stop()
    out = serve(tmp_path, config, env=base_env(RAINBRIDGE_ENCRYPTION_KEY="other-key"))
    assert out.returncode != 0
    assert "encryption key does not match the data" in out.stderr
    # Bifrost's variable name works too.
    gw2 = start_gateway(config, env=base_env(BIFROST_ENCRYPTION_KEY="first-key"))
    assert http_json("GET", gw2.url + "/health")[0] == 200


def test_rotate_key_cli_then_serve_with_the_new_key(tmp_path, store_config, start_gateway, mock):
    # Two secrets: one from the file (re-synced from the file at every start) and one added
    # through the management API, which lives only in the store: the upstream receiving it
    # after the rotation proves it was decrypted with the new key.
    file_value, api_value = f"sk-rotate-file-{uuid.uuid4().hex}", f"sk-rotate-api-{uuid.uuid4().hex}"
    config = {"config_store": store_config, "providers": {"openai": {"keys": [{"name": "file", "value": file_value}], "network_config": {"base_url": mock.url}}}}
    env = {"RAINBRIDGE_ADMIN_TOKEN": TOKEN}
    gw = start_gateway(config, env=base_env(RAINBRIDGE_ENCRYPTION_KEY="old-pass", **env))
    status, _, body = http_json("POST", gw.url + "/api/providers", {"name": "stored", "type": "openai", "network_config": {"base_url": mock.url}}, headers=ADMIN)
    assert status == 201, body
    status, _, body = http_json("POST", gw.url + "/api/providers/stored/keys", {"name": "k1", "value": api_value}, headers=ADMIN)
    assert status == 201, body
    gw.stop()
    path = tmp_path / "rotate.json"
    path.write_text(json.dumps(config))
    out = subprocess.run(
        [sys.executable, "-m", "rainbridge", "store", "rotate-key", "--config", str(path), "--app-dir", str(tmp_path), "--old", "old-pass", "--new", "new-pass"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "re-encrypted 2 secret(s)" in out.stderr
    assert file_value not in out.stderr + out.stdout and api_value not in out.stderr + out.stdout
    refused = serve(tmp_path, config, env=base_env(RAINBRIDGE_ENCRYPTION_KEY="old-pass"))
    assert refused.returncode != 0 and "encryption key does not match the data" in refused.stderr

    gw2 = start_gateway(config, env=base_env(RAINBRIDGE_ENCRYPTION_KEY="new-pass", **env))
    before = mock.stats()["by_key"]
    for model, value in (("stored/gpt-4o", api_value), ("openai/gpt-4o", file_value)):
        status, _, body = http_json("POST", gw2.url + "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "x"}]})
        assert status == 200, body
        assert mock.stats()["by_key"].get(value, 0) == before.get(value, 0) + 1, (model, mock.stats()["by_key"])
    assert api_value not in gw2.log() and file_value not in gw2.log()


def test_no_key_warns_once_and_stores_plaintext(tmp_path, start_gateway, mock):
    gw = start_gateway({"providers": {"openai": {"keys": [{"value": "sk-plain-1"}], "network_config": {"base_url": mock.url}}}}, env=base_env())
    assert gw.log().count("secrets are stored in plaintext") == 1
    with contextlib.closing(sqlite3.connect(f"file:{gw.app_dir / 'config.db'}?mode=ro", uri=True)) as db:
        stored = [row[0] for row in db.execute("SELECT value FROM provider_keys WHERE provider = 'openai'")]
    assert stored == ["sk-plain-1"]
