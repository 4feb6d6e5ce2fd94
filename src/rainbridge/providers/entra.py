"""Microsoft Entra ID access tokens for Azure OpenAI keys given as a service principal.

Bifrost's ``azure_key_config`` may name ``client_id``, ``client_secret`` and ``tenant_id``
instead of an API key; requests then carry ``Authorization: Bearer <token>`` from the OAuth 2.0
client-credentials flow, as Microsoft documents it:

    POST {authority}/{tenant_id}/oauth2/v2.0/token
    Content-Type: application/x-www-form-urlencoded

    client_id=…&client_secret=…&grant_type=client_credentials&scope=https://cognitiveservices.azure.com/.default

    200 {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": "…"}
    4xx {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret …", …}

A key with neither an API key nor a service principal authenticates as the Azure identity of
the environment, as Bifrost's DefaultAzureCredential does first: azure-identity's
EnvironmentCredential (``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID``, ``AZURE_CLIENT_SECRET``), then
its WorkloadIdentityCredential (AKS workload identity: ``AZURE_FEDERATED_TOKEN_FILE`` instead
of the secret, sent as a ``client_assertion`` and re-read for each token, as the kubelet
rotates it). Managed identity (the instance metadata endpoint) is not supported yet.

The authority is ``https://login.microsoftonline.com``, or ``AZURE_AUTHORITY_HOST`` (the variable
azure-identity reads, for national clouds). Our own HTTP client makes the call: the flow is
one form POST, and azure-identity would add a dependency to do the same.

A token is kept until shortly before it expires (``refresh_margin``) and fetched once however
many requests wait for it.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import orjson

AUTHORITY_ENV = "AZURE_AUTHORITY_HOST"
TENANT_ENV, CLIENT_ENV, SECRET_ENV, TOKEN_FILE_ENV = (
    "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION = 16384  # bytes of a federated token file read
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_SCOPE = "https://cognitiveservices.azure.com/.default"
MAX_DESCRIPTION = 500  # characters of Entra's error_description passed on
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token


@dataclass(frozen=True, slots=True)
class ServicePrincipal:
    tenant_id: str
    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = (DEFAULT_SCOPE,)
    assertion_file: str = ""  # workload identity: a federated token file instead of the secret

    def __repr__(self) -> str:  # never the secret
        return f"ServicePrincipal(tenant_id={self.tenant_id!r}, client_id={self.client_id!r})"


def service_principal(azure: object) -> ServicePrincipal | None:
    """The key's service principal when its ``azure_key_config`` names all three fields."""
    tenant = getattr(azure, "tenant_id", "")
    client = getattr(azure, "client_id", "")
    secret = getattr(azure, "client_secret", "")
    if not (tenant and client and secret):
        return None
    scopes = tuple(getattr(azure, "scopes", ()) or ()) or (DEFAULT_SCOPE,)
    return ServicePrincipal(tenant, client, secret, scopes)


def environment_principal(environ: dict[str, str] | None = None) -> ServicePrincipal | None:
    """The environment's service principal (client secret, else federated token file), or None."""
    env = os.environ if environ is None else environ
    tenant, client = env.get(TENANT_ENV, "").strip(), env.get(CLIENT_ENV, "").strip()
    if not (tenant and client):
        return None
    if env.get(SECRET_ENV):
        return ServicePrincipal(tenant, client, env[SECRET_ENV])
    if env.get(TOKEN_FILE_ENV, "").strip():
        return ServicePrincipal(tenant, client, "", assertion_file=env[TOKEN_FILE_ENV].strip())
    return None


def read_assertion(sp: ServicePrincipal) -> str:
    """The federated token, read afresh (blocking: call it in a thread); OSError if unreadable."""
    with open(sp.assertion_file, "rb") as f:
        return f.read(MAX_ASSERTION).decode("ascii", "replace").strip()


def authority(environ: dict[str, str] | None = None) -> str:
    found = (os.environ if environ is None else environ).get(AUTHORITY_ENV, "").strip()
    if not found:
        return DEFAULT_AUTHORITY
    return (found if "://" in found else "https://" + found).rstrip("/")


def token_request(sp: ServicePrincipal, assertion: str | None = None) -> tuple[str, bytes]:
    """(path under the authority, form body) of the client-credentials token request, with the
    client secret or, for workload identity, the federated ``assertion``."""
    proof = ({"client_assertion": assertion, "client_assertion_type": ASSERTION_TYPE} if assertion is not None
             else {"client_secret": sp.client_secret})
    body = urlencode({"client_id": sp.client_id, **proof, "grant_type": "client_credentials",
                      "scope": " ".join(sp.scopes)})
    return f"/{quote(sp.tenant_id, safe='')}/oauth2/v2.0/token", body.encode()


class TokenRefused(Exception):
    """Entra ID answered with an error (or with something that is not a token)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def parse_token_response(status: int, data: bytes) -> tuple[str, float]:
    """(access token, lifetime in seconds) of a token endpoint answer; TokenRefused otherwise."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise TokenRefused(status, f"the token endpoint answered HTTP {status} without a JSON document")
    if status != 200:
        error = doc.get("error") if isinstance(doc.get("error"), str) else "error"
        description = doc.get("error_description") if isinstance(doc.get("error_description"), str) else ""
        # Entra appends "Trace ID: … Correlation ID: … Timestamp: …" lines: the first line says it.
        first = description.strip().splitlines()[0] if description.strip() else ""
        raise TokenRefused(status, f"{error}: {first[:MAX_DESCRIPTION]}" if first else error)
    token = doc.get("access_token")
    lifetime = doc.get("expires_in")
    if isinstance(lifetime, str) and lifetime.isdigit():  # v1 endpoints send it as a string
        lifetime = int(lifetime)
    if not isinstance(token, str) or not token or not isinstance(lifetime, int | float) or lifetime <= 0:
        raise TokenRefused(status, "the token endpoint's answer has no access_token and expires_in")
    if not _TOKEN.fullmatch(token):  # it goes into a header line as it is
        raise TokenRefused(status, "the token endpoint's access_token is not a bearer token")
    return token, float(lifetime)


def refresh_margin(lifetime: float) -> float:
    """Seconds before expiry a token is replaced: 5 minutes (as azure-identity), at most half
    its lifetime so a short-lived token is still used."""
    return min(300.0, lifetime / 2)


class TokenCache:
    """Tokens per service principal. ``get`` returns a fresh one, calling ``fetch`` (one call
    at a time per principal) when there is none or it is about to expire."""

    def __init__(self, fetch: Callable[[ServicePrincipal], object], clock: Callable[[], float] = time.monotonic):
        self._fetch = fetch  # async (ServicePrincipal) -> (token, lifetime)
        self._clock = clock
        self._tokens: dict[ServicePrincipal, tuple[str, float]] = {}  # token, refresh at
        self._locks: dict[ServicePrincipal, asyncio.Lock] = {}

    async def get(self, sp: ServicePrincipal) -> str:
        found = self._tokens.get(sp)
        if found is not None and self._clock() < found[1]:
            return found[0]
        lock = self._locks.setdefault(sp, asyncio.Lock())
        async with lock:
            found = self._tokens.get(sp)  # another request may have fetched it meanwhile
            if found is not None and self._clock() < found[1]:
                return found[0]
            started = self._clock()
            token, lifetime = await self._fetch(sp)  # type: ignore[misc]
            self._tokens[sp] = (token, started + lifetime - refresh_margin(lifetime))
            return token
