"""Build the runtime providers of one worker from the configuration."""

from __future__ import annotations

from ..config.checks import default_base_url
from ..config.families import OPENAI_ROUTES, preset_of, provider_family
from ..config.schema import Config, ProviderConfig, ProxyConfig
from ..upstream import HttpProxy, Socks5Proxy, UpstreamClient
from ..upstream.proxy import ProxyChoice, environment_proxies
from .anthropic import AnthropicAdapter
from .azure import AzureAdapter
from .base import ProviderKey
from .bedrock import BedrockAdapter
from .cohere import CohereAdapter
from .gemini import GeminiAdapter
from .http import HttpAdapter, tls_setting
from .huggingface import HuggingFaceAdapter
from .openai import OpenAIAdapter
from .vertex import VertexAdapter

ADAPTERS: dict[str, type[HttpAdapter]] = {
    "openai": OpenAIAdapter,
    "azure": AzureAdapter,
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
    "cohere": CohereAdapter,
    "bedrock": BedrockAdapter,
    "vertex": VertexAdapter,
}
# Presets of the openai family that need more than a base URL (a model name form).
PRESET_ADAPTERS: dict[str, type[HttpAdapter]] = {"huggingface": HuggingFaceAdapter}


def build_adapter(name: str, pc: ProviderConfig, client: UpstreamClient) -> HttpAdapter:
    custom = pc.custom_provider_config
    family = provider_family(name, pc.type, custom.base_provider_type if custom else None)
    if family is None:  # config validation rejects this earlier
        raise ValueError(f"provider {name}: unknown type")
    base_url = pc.network_config.base_url or default_base_url(name, pc) or ""
    preset = preset_of(name, pc.type, custom.base_provider_type if custom else None)
    adapter = PRESET_ADAPTERS.get(preset or "", ADAPTERS[family])(name, base_url, client, pc.network_config)
    if preset in OPENAI_ROUTES and isinstance(adapter, OpenAIAdapter):
        adapter.routes = OPENAI_ROUTES[preset]
    if custom is not None and custom.request_path_overrides and isinstance(adapter, OpenAIAdapter):
        adapter.path_overrides = dict(custom.request_path_overrides)
    proxy = pc.proxy_config
    if proxy is not None and proxy.type != "none":
        adapter.proxy_for = proxy_choice(proxy)
        if proxy.ca_cert_pem:
            adapter.verify = tls_setting(pc.network_config, proxy.ca_cert_pem)
    return adapter


def proxy_choice(proxy: ProxyConfig) -> ProxyChoice:
    """Which proxy each upstream URL of a provider goes through (config checks vouch for it)."""
    if proxy.type == "environment":
        return environment_proxies().for_url
    kind = {"http": HttpProxy, "socks5": Socks5Proxy}.get(proxy.type)
    if kind is None:
        raise ValueError(f"proxy type {proxy.type!r} is not supported")
    fixed = kind.from_url(proxy.url or "", proxy.username, proxy.password)
    return lambda url: fixed


def build_keys(pc: ProviderConfig, adapter: HttpAdapter, version: int) -> list[ProviderKey]:
    keys = []
    for i, kc in enumerate(pc.keys):
        models = kc.models
        if models is None or "*" in models or (version == 1 and not models):
            allowed = None
        else:
            allowed = frozenset(models)
        key = ProviderKey(
            name=kc.name or kc.id or f"key-{i}",
            value=kc.value,
            models=allowed,
            weight=kc.weight,
            aliases=dict(kc.aliases),
            blacklist=frozenset(kc.blacklisted_models),
            azure=kc.azure_key_config,
            bedrock=kc.bedrock_key_config,
            vertex=kc.vertex_key_config,
            key_id=kc.id,
            regions=frozenset([kc.region] if isinstance(kc.region, str) else kc.region or ()),
        )
        keys.append(key)
    if not keys:
        keys.append(ProviderKey("keyless", "", None, 1.0))
    for key in keys:
        key.headers = adapter.key_headers(key)
    return keys


def configured_names(config: Config) -> list[str]:
    return list(config.providers)
