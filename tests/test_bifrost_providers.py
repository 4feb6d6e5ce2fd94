"""Bifrost providers rainbridge has no adapter for: skipped with one warning each, the rest of
the gateway starts, and their models answer a clear 404 (issue 14). Client: the openai SDK."""

from __future__ import annotations

import openai
import pytest

from support import GatewayProcess

SKIPPED = ("elevenlabs", "runway")


def config(mock_url: str) -> dict:
    return {"providers": {
        "openai": {"keys": [{"name": "main", "value": "sk-bifrost-prov-0123456789", "models": ["*"]}],
                   "network_config": {"base_url": mock_url}},
        # As Bifrost's docs write them (values are never sent anywhere: the providers are skipped).
        "elevenlabs": {"keys": [{"name": "el", "value": "el-example-key", "models": ["*"], "weight": 1}]},
        "runway": {"keys": [{"name": "rw", "value": "rw-example-key", "models": ["*"], "weight": 1}]},
    }}


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    gateway = GatewayProcess(tmp_path_factory.mktemp("bifrost-prov"), config(mock.url))
    yield gateway
    gateway.stop()


def chat(gw, model: str) -> str:
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    return sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}]).choices[0].message.content


def test_unsupported_providers_are_skipped_with_one_warning_each(gw):
    log = gw.log()
    for name in SKIPPED:
        assert log.count(f"$.providers.{name}: provider '{name}' is not supported by rainbridge yet: skipped") == 1, log


def test_the_rest_of_the_gateway_serves(gw):
    assert chat(gw, "openai/gpt-4o")


@pytest.mark.parametrize("name", SKIPPED)
def test_a_skipped_providers_model_answers_404_provider_not_supported(gw, name):
    with pytest.raises(openai.NotFoundError) as caught:
        chat(gw, f"{name}/some-model")
    error = caught.value.body
    assert error["code"] == "provider_not_supported" and error["param"] == "model"
    assert f"provider '{name}' is not supported" in error["message"]
