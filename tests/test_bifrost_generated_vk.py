"""A virtual key listed without ``value`` gets a generated one, as in Bifrost (issue 14): the
log says which file holds it (never the value), the value works with the official openai
SDK, and a restart keeps it."""

from __future__ import annotations

import os
import re
import stat

import openai
import pytest

from rainbridge.config.load import ConfigError, load_data
from support import GatewayProcess


def config(mock_url: str) -> dict:
    return {
        "providers": {"openai": {"keys": [{"name": "main", "value": "sk-bifrost-gen-0123456789", "models": ["*"]}],
                                 "network_config": {"base_url": mock_url}}},
        "governance": {"is_vk_mandatory": True, "virtual_keys": [{"id": "no-value", "name": "no-value"}]},
    }


def generated_value(gw) -> tuple[str, str]:
    m = re.search(r"virtual key 'no-value' \(\$\.governance\.virtual_keys\[0\]\) has no value in the config: "
                  r"generated one; read it from (\S+)", gw.log())
    assert m, gw.log()
    with open(m.group(1), encoding="utf-8") as f:
        return m.group(1), f.read().strip()


def chat(gw, api_key: str) -> str:
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=api_key, max_retries=0, timeout=20)
    return sdk.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content


def test_generated_virtual_key_value_is_usable_unlogged_and_kept_across_restart(mock, tmp_path):
    gw = GatewayProcess(tmp_path, config(mock.url))
    try:
        path, value = generated_value(gw)
        assert value.startswith("sk-rb-") and value not in gw.log()
        assert chat(gw, value)
    finally:
        gw.stop()
    again = GatewayProcess(tmp_path, config(mock.url), name="gw")  # same app dir
    try:
        with open(path, encoding="utf-8") as f:
            assert f.read().strip() == value
        assert chat(again, value)
        assert value not in again.log()
    finally:
        again.stop()


def test_generated_value_file_is_owner_only(mock, tmp_path):
    gw = GatewayProcess(tmp_path, config(mock.url))
    try:
        path, _ = generated_value(gw)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        gw.stop()


def test_virtual_key_without_value_is_refused_with_the_postgres_store():
    raw = config("http://127.0.0.1:1") | {"config_store": {"enabled": True, "type": "postgres", "config": {"host": "db"}}}
    with pytest.raises(ConfigError) as caught:
        load_data(raw, {})
    assert "$.governance.virtual_keys[0].value" in [p.path for p in caught.value.errors]
