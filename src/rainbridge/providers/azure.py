"""Azure OpenAI: the OpenAI wire format at deployment URLs, with an ``api-key`` header or an
Entra ID bearer token.

``{endpoint}/openai/deployments/{deployment}/{op}?api-version={version}``, where the
endpoint and the model → deployment map come from each key's ``azure_key_config``. A key whose
``azure_key_config`` names a service principal (``client_id``, ``client_secret``,
``tenant_id``) authenticates with ``Authorization: Bearer`` from Entra ID instead of its
``value``, as Bifrost gives the service principal precedence (see entra.py). A key with
neither authenticates as the environment's Azure identity (entra.py: environment_principal),
as Bifrost's DefaultAzureCredential.
"""

from __future__ import annotations

import asyncio
import dataclasses
from urllib.parse import quote, urlsplit

from ..config.schema import AzureKeyConfig, NetworkConfig
from ..errors import UpstreamError, UpstreamUnreachable
from ..translate.anthropic_openai import openai_error_type
from ..upstream import Exchange, UpstreamClient
from .base import ProviderKey, Reply, scrub
from .entra import (
    ServicePrincipal,
    TokenCache,
    TokenRefused,
    authority,
    environment_principal,
    parse_token_response,
    read_assertion,
    service_principal,
    token_request,
)
from .openai import OpenAIAdapter

DEFAULT_API_VERSION = "2024-10-21"
NO_IDENTITY = ("no API key, no azure_key_config service principal and no Azure identity in the environment "
               "(AZURE_TENANT_ID and AZURE_CLIENT_ID with AZURE_CLIENT_SECRET or AZURE_FEDERATED_TOKEN_FILE; "
               "managed identity is not supported yet)")


class AzureAdapter(OpenAIAdapter):
    family = "azure"

    def __init__(self, name: str, base_url: str, client: UpstreamClient, network: NetworkConfig):
        super().__init__(name, base_url, client, network)
        self.authority = authority()
        self.tokens = TokenCache(self._fetch_token)
        self.ambient = environment_principal()  # for keys with neither an API key nor a principal
        self._bearer: dict[str, bytes] = {}  # key id -> its current Authorization line

    def key_headers(self, key: ProviderKey) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.network.extra_headers}
        if key.value and service_principal(key.azure) is None:
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

    # -- Entra ID ---------------------------------------------------------------------------

    async def post(self, url: str, path: str, body: bytes, key: ProviderKey, extra: dict[str, str] | None) -> Reply:
        await self._authorize(key)
        return await super().post(url, path, body, key, extra)

    async def open_stream(self, url: str, path: str, body: bytes, key: ProviderKey, extra: dict[str, str] | None) -> Exchange:
        await self._authorize(key)
        return await super().open_stream(url, path, body, key, extra)

    def post_head(self, origin, path: str, key: ProviderKey, length: int, extra: dict[str, str] | None) -> bytes:
        head = super().post_head(origin, path, key, length, extra)
        line = self._bearer.get(key.id)
        if line is None:
            return head
        end = head.index(b"\r\n") + 2  # after the request line
        return head[:end] + line + head[end:]

    async def _authorize(self, key: ProviderKey) -> None:
        """Make sure the key's bearer token is fresh before its request head is built (the
        head is built without an await after this, so it sees this token)."""
        sp = self.principal(key)
        if sp is not None:
            token = await self.tokens.get(sp)
            self._bearer[key.id] = b"Authorization: Bearer " + token.encode("ascii") + b"\r\n"

    def principal(self, key: ProviderKey) -> ServicePrincipal | None:
        """The principal the key's tokens are for: its own, or for a key without an API key the
        environment's (with the key's scopes); None for an API key. No identity at all is a
        dead key (401), as DefaultAzureCredential finding none."""
        sp = service_principal(key.azure)
        if sp is not None or key.value:
            return sp
        if self.ambient is None:
            raise UpstreamError(f"{self.name}: {NO_IDENTITY}", provider=self.name, status=401,
                                type=openai_error_type(401), code="azure_identity_missing")
        scopes = tuple(getattr(key.azure, "scopes", ()) or ()) or self.ambient.scopes
        return self.ambient if scopes == self.ambient.scopes else dataclasses.replace(self.ambient, scopes=scopes)

    async def _fetch_token(self, sp: ServicePrincipal) -> tuple[str, float]:
        assertion = None
        if sp.assertion_file:
            try:
                assertion = await asyncio.to_thread(read_assertion, sp)
            except OSError as exc:
                raise UpstreamError(f"{self.name}: cannot read the federated token file (AZURE_FEDERATED_TOKEN_FILE): "
                                    f"{exc.strerror}", provider=self.name, status=401, type=openai_error_type(401),
                                    code="entra_token_refused") from None
        path, body = token_request(sp, assertion)
        # Always verified TLS, whatever the provider's setting; through the provider's proxy
        # (its only way out when one is configured).
        proxy = self.proxy_for(self.authority) if self.proxy_for is not None else None
        origin = self.client.origin(self.authority, proxy=proxy)
        prefix = urlsplit(self.authority).path.rstrip("/")
        head = (f"POST {prefix}{path} HTTP/1.1\r\nHost: ".encode("latin-1") + origin.host_header
                + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\n"
                b"Accept-Encoding: identity\r\nContent-Length: %d\r\n\r\n" % len(body))
        try:
            exchange = await self._exchange(origin, head, body)
            data = await exchange.read()
        except UpstreamUnreachable as exc:
            raise UpstreamUnreachable(f"provider {self.name} cannot get an Entra ID token from {self.authority}: "
                                      f"{exc.message}", provider=self.name, code="entra_unreachable") from None
        try:
            return parse_token_response(exchange.status, data)
        except TokenRefused as exc:
            # A refused credential is a dead key (401: the router moves to the next key); Entra
            # busy, down or answering nonsense is retried like any upstream failure.
            if exc.status == 429 or exc.status >= 500:
                status = exc.status
            else:
                status = 401 if exc.status >= 400 else 502
            secret = ProviderKey("entra", sp.client_secret, None, 1.0)
            raise UpstreamError(
                f"{self.name}: Entra ID gave no token for client {sp.client_id} ({scrub(exc.message, secret)})",
                provider=self.name, status=status, type=openai_error_type(status), code="entra_token_refused",
                retry_after=exchange.retry_after,
            ) from None
