"""Under ``--log-level debug`` no provider key reaches the log: the store drivers' DEBUG lines
carry statement parameters (aiosqlite logged every INSERT with its arguments)."""

from __future__ import annotations

import socket
import uuid

import openai

from support import http_json, provider_config

TOKEN = "admin-token-for-log-test"


def test_debug_logging_never_shows_a_stored_provider_key(start_gateway, mock, store_config):
    file_key = f"sk-file-{uuid.uuid4().hex}"
    config = provider_config(mock.url)
    config["providers"]["openai"]["keys"][0]["value"] = file_key
    gw = start_gateway({**config, "config_store": store_config}, "--log-level", "debug",
                       env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    api_key = f"sk-api-{uuid.uuid4().hex}"
    status, _, body = http_json("POST", gw.url + "/api/providers/openai/keys", {"name": "added", "value": api_key},
                                headers={"authorization": f"Bearer {TOKEN}"})
    assert status == 201, body
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    client.chat.completions.create(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:  # logged at DEBUG
        sock.sendall(b"NOT HTTP\r\n\r\n")
        sock.recv(1024)
    gw.proc.wait_for(r" DEBUG ", timeout=10)  # debug logging is on
    log = gw.log()
    assert file_key not in log
    assert api_key not in log
    assert file_key[8:20] not in log and api_key[7:19] not in log  # nor a fragment of one
