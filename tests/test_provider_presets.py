"""Bifrost's providers rainbridge now serves (issue 14), at load and adapter-building time:
each preset's public endpoint, custom providers falling back to their base provider's
endpoint (and its paths), and which Bifrost providers stay skipped."""

from __future__ import annotations

import pytest

from rainbridge.config.families import UNSUPPORTED_PROVIDERS
from rainbridge.config.load import load_data
from rainbridge.providers.cohere import CohereAdapter
from rainbridge.providers.huggingface import HuggingFaceAdapter, router_model
from rainbridge.providers.openai import OpenAIAdapter
from rainbridge.providers.registry import build_adapter
from rainbridge.upstream import UpstreamClient

KEY = [{"value": "key-0123456789"}]


def adapter(name: str, entry: dict):
    loaded = load_data({"providers": {name: entry}}, {})
    assert loaded.warnings == []
    return build_adapter(name, loaded.config.providers[name], UpstreamClient())


@pytest.mark.parametrize(("name", "kind", "base_url", "chat_path"), [
    ("cohere", CohereAdapter, "https://api.cohere.com", None),
    ("perplexity", OpenAIAdapter, "https://api.perplexity.ai", "/chat/completions"),
    ("nebius", OpenAIAdapter, "https://api.tokenfactory.nebius.com", "/v1/chat/completions"),
    ("huggingface", HuggingFaceAdapter, "https://router.huggingface.co", "/v1/chat/completions"),
    ("parasail", OpenAIAdapter, "https://api.parasail.io", "/v1/chat/completions"),
    ("opencode-zen", OpenAIAdapter, "https://opencode.ai/zen", "/zen/v1/chat/completions"),
    ("opencode-go", OpenAIAdapter, "https://opencode.ai/zen/go", "/zen/go/v1/chat/completions"),
])
def test_a_preset_without_base_url_uses_the_vendors_endpoint(name, kind, base_url, chat_path):
    built = adapter(name, {"keys": KEY})
    assert type(built) is kind and built.base_url == base_url
    if chat_path is not None:
        assert built.target("chat/completions", None, "m") == (base_url, chat_path)


@pytest.mark.parametrize(("base", "base_url", "chat_path"), [
    ("perplexity", "https://api.perplexity.ai", "/chat/completions"),
    ("nebius", "https://api.tokenfactory.nebius.com", "/v1/chat/completions"),
])
def test_a_custom_provider_without_base_url_takes_its_base_providers_endpoint_and_paths(base, base_url, chat_path):
    built = adapter("mine", {"custom_provider_config": {"base_provider_type": base}, "keys": KEY})
    assert built.target("chat/completions", None, "m") == (base_url, chat_path)


def test_a_custom_cohere_provider_without_base_url_is_cohere_at_coheres_endpoint():
    built = adapter("mine", {"custom_provider_config": {"base_provider_type": "cohere"}, "keys": KEY})
    assert isinstance(built, CohereAdapter) and built.base_url == "https://api.cohere.com"


def test_a_base_url_given_keeps_the_presets_paths():
    built = adapter("perplexity", {"keys": KEY, "network_config": {"base_url": "https://pplx.internal/proxy"}})
    assert built.target("chat/completions", None, "m") == ("https://pplx.internal/proxy", "/proxy/chat/completions")


@pytest.mark.parametrize(("model", "expected"), [
    ("novita/meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct:novita"),
    ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
    ("meta-llama/Llama-3.1-8B-Instruct:cerebras", "meta-llama/Llama-3.1-8B-Instruct:cerebras"),
    ("gpt2", "gpt2"),
])
def test_hugging_face_model_names_in_bifrosts_form_become_the_routers(model, expected):
    assert router_model(model) == expected


@pytest.mark.parametrize("name", ["elevenlabs", "replicate", "runway", "runware", "bedrock_mantle"])
def test_providers_that_are_not_openai_chat_apis_stay_skipped(name):
    assert name in UNSUPPORTED_PROVIDERS
    loaded = load_data({"providers": {name: {"keys": KEY}}}, {})
    assert name not in loaded.config.providers and "skipped" in loaded.warnings[0].message
