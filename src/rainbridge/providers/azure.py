"""Azure OpenAI: the OpenAI wire format at deployment URLs, with an ``api-key`` header.

``{endpoint}/openai/deployments/{deployment}/{op}?api-version={version}``, where the
endpoint and the model → deployment map come from each key's ``azure_key_config``.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from ..config.schema import AzureKeyConfig
from .base import ProviderKey
from .openai import OpenAIAdapter

DEFAULT_API_VERSION = "2024-10-21"


class AzureAdapter(OpenAIAdapter):
    family = "azure"

    def key_headers(self, key: ProviderKey) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.network.extra_headers}
        if key.value:
            headers["api-key"] = key.value
        return headers

    def target(self, op: str, key: ProviderKey, model: str) -> tuple[str, str]:
        azure: AzureKeyConfig | None = key.azure  # type: ignore[assignment]
        endpoint = ((azure.endpoint if azure else "") or self.base_url).rstrip("/")
        deployment = (azure.deployments.get(model) if azure else None) or model
        version = (azure.api_version if azure else None) or DEFAULT_API_VERSION
        prefix = urlsplit(endpoint).path.rstrip("/")
        return endpoint, f"{prefix}/openai/deployments/{quote(deployment, safe='')}/{op}?api-version={quote(version)}"

    async def list_models(self, key: ProviderKey) -> list[str]:
        azure: AzureKeyConfig | None = key.azure  # type: ignore[assignment]
        return sorted(azure.deployments) if azure else []
