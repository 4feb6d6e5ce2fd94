"""Checks that need more than types: provider families, URLs, names, store/cluster rules."""

from __future__ import annotations

import importlib.util
import ipaddress
import re
import ssl
from urllib.parse import urlsplit

from ..providers.google_oauth import service_account_info
from ..upstream.proxy import HttpProxy, environment_proxies
from ..upstream.socks import Socks5Proxy
from ..upstream.socks import available as socks_available
from .families import FAMILIES, KNOWN_PROVIDERS, provider_family
from .schema import (
    AzureKeyConfig,
    BedrockKeyConfig,
    Config,
    ProviderConfig,
    ProxyConfig,
    VertexKeyConfig,
)
from .validate import Problem, child

HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token


def semantic_problems(config: Config) -> list[Problem]:
    out: list[Problem] = []
    for name, provider in config.providers.items():
        _check_provider(name, provider, child("$.providers", name), out)
    for section in ("config_store", "logs_store"):
        store = getattr(config, section)
        if store is not None and store.enabled and store.type == "postgres":
            settings = store.config
            if not settings.dsn and not settings.host:
                out.append(
                    Problem(f"$.{section}.config", "postgres needs either dsn or host")
                )
    _check_cluster(config, out)
    if config.client.allow_direct_keys:
        out.append(Problem("$.client.allow_direct_keys", "clients' own provider keys are not supported: "
                           "requests always use the configured keys (ignored)", "warning"))
    for i, entry in enumerate(config.client.required_headers):
        name = entry.partition("=")[0].strip()  # "Name" or "Name=value" (the value may be a secret: never shown)
        if not HEADER_NAME.fullmatch(name):
            out.append(Problem(child("$.client.required_headers", i), f"not an HTTP header name: {name!r}"))
    store = config.config_store
    if store is not None and store.enabled and store.type == "postgres":
        for i, vk in enumerate(config.governance.virtual_keys):
            if not vk.value:
                out.append(Problem(f"$.governance.virtual_keys[{i}].value", "required with the PostgreSQL config store "
                                   "(nodes would each generate a different value); use env.VAR"))
    from ..governance.normalize import normalize  # governance depends on config, not the reverse

    out.extend(normalize(config.governance, set(config.providers), 0).problems)
    from ..gateway.rules_config import rules_from_config

    store = config.config_store
    rules_from_config(config.governance, config.providers, out, store is not None and store.enabled)
    return out


def default_base_url(name: str, provider: ProviderConfig) -> str | None:
    """The endpoint used when ``network_config.base_url`` is absent: a known provider's own,
    or for Bifrost's custom providers (``custom_provider_config``) their base provider's, as
    Bifrost falls back. Our ``type`` extension has none: it names an API family, not a vendor."""
    if provider.type is None:
        known = KNOWN_PROVIDERS.get(name)
        if known is not None:
            return known.base_url
        custom = provider.custom_provider_config
        base = KNOWN_PROVIDERS.get(custom.base_provider_type) if custom else None
        return base.base_url if base else None
    known = KNOWN_PROVIDERS.get(provider.type)
    return known.base_url if known is not None and name in KNOWN_PROVIDERS else None


def valid_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


# Bifrost request types whose path rainbridge can override (the OpenAI-compatible routes).
PATH_OVERRIDE_TYPES = ("chat_completion", "chat_completion_stream", "text_completion", "text_completion_stream",
                       "embedding", "list_models")


def _check_path_overrides(overrides: dict[str, str], family: str, path: str, out: list[Problem]) -> None:
    """Routing overrides: a request sent elsewhere than the file says is refused, never ignored."""
    if family != "openai":
        out.append(Problem(path, f"request path overrides are supported for OpenAI-compatible providers only, "
                           f"not {family!r}: remove them to start"))
        return
    for kind, value in overrides.items():
        where = child(path, kind)
        if not value.strip():
            continue  # Bifrost: an empty override keeps the default path
        if kind not in PATH_OVERRIDE_TYPES:
            out.append(Problem(where, f"rainbridge serves no {kind} requests, so this override has no effect (ignored)",
                               "warning"))
        elif "://" in value and not valid_http_url(value.strip()):
            out.append(Problem(where, f"not an http(s) URL: {value!r}"))
        elif any(c in value for c in " \r\n\t#"):
            out.append(Problem(where, f"not a URL path: {value!r}"))


def _check_provider(name: str, provider: ProviderConfig, path: str, out: list[Problem]) -> None:
    if "/" in name or not name:
        out.append(Problem(path, "provider names must be non-empty and contain no '/'"))
    custom = provider.custom_provider_config
    family = provider_family(name, provider.type, custom.base_provider_type if custom else None)
    if family is None:
        where = "type" if provider.type else "custom_provider_config.base_provider_type"
        if provider.type or custom:
            bad = provider.type or (custom.base_provider_type if custom else "")
            out.append(
                Problem(
                    child(path, where) if provider.type else f"{path}.{where}",
                    f"unknown provider type {bad!r}; use one of {', '.join(FAMILIES)} "
                    "or a known provider name",
                )
            )
        else:
            out.append(
                Problem(
                    path,
                    f"unknown provider {name!r}: set \"type\": \"openai\" (any OpenAI-compatible "
                    "endpoint), \"anthropic\" or \"azure\", with network_config.base_url",
                )
            )
        return
    if custom is not None and custom.request_path_overrides:
        _check_path_overrides(custom.request_path_overrides, family, f"{path}.custom_provider_config.request_path_overrides", out)
    base_url = provider.network_config.base_url
    if base_url is not None and not valid_http_url(base_url):
        out.append(
            Problem(f"{path}.network_config.base_url", f"not an http(s) URL: {base_url!r}")
        )
    known = KNOWN_PROVIDERS.get(provider.type or name)
    if base_url is None and family not in REGIONAL and default_base_url(name, provider) is None:
        if provider.type is not None or custom is not None or (known and known.base_url is None):
            out.append(
                Problem(
                    f"{path}.network_config.base_url",
                    "required: this provider has no public endpoint",
                )
            )
    if provider.proxy_config is not None:
        _check_proxy(provider.proxy_config, f"{path}.proxy_config", out)
    net = provider.network_config
    if net.retry_backoff_max < net.retry_backoff_initial:
        out.append(
            Problem(
                f"{path}.network_config.retry_backoff_max",
                f"must be >= retry_backoff_initial ({net.retry_backoff_initial} ms)",
            )
        )
    seen: dict[str, int] = {}
    for i, key in enumerate(provider.keys):
        kpath = child(f"{path}.keys", i)
        if key.name:
            if key.name in seen:
                out.append(
                    Problem(f"{kpath}.name", f"duplicate key name {key.name!r} (also keys[{seen[key.name]}])")
                )
            seen.setdefault(key.name, i)
        keyless = (known is not None and not known.needs_key) or (custom is not None and custom.is_key_less)
        if not key.value and not keyless and family != "azure":
            out.append(Problem(f"{kpath}.value", "empty API key"))
        entra = family == "azure" and _entra_complete(key.azure_key_config, kpath, out)
        if family == "azure":
            azure = key.azure_key_config
            endpoint = (azure.endpoint if azure else "") or base_url
            if not endpoint:
                out.append(
                    Problem(
                        f"{kpath}.azure_key_config.endpoint",
                        "required for azure (or set network_config.base_url)",
                    )
                )
            elif not valid_http_url(endpoint):
                out.append(
                    Problem(f"{kpath}.azure_key_config.endpoint", f"not an http(s) URL: {endpoint!r}")
                )
            if not key.value and not entra:
                out.append(Problem(f"{kpath}.value", "no API key: authenticates as the environment's Azure identity "
                                   "(AZURE_TENANT_ID and AZURE_CLIENT_ID with AZURE_CLIENT_SECRET or "
                                   "AZURE_FEDERATED_TOKEN_FILE), as Bifrost's DefaultAzureCredential", "note"))
        if family == "bedrock":
            _check_bedrock_key(key.bedrock_key_config, kpath, out)
            if not key.value and not _installed("botocore"):
                out.append(Problem(kpath, "bedrock signs requests with botocore: pip install 'rainbridge[bedrock]'"))
        elif family == "vertex":
            _check_vertex_key(key.vertex_key_config, kpath, out)
            if not _installed("google.auth"):
                out.append(Problem(kpath, "vertex gets tokens with google-auth: pip install 'rainbridge[vertex]'"))
        if key.models == []:
            out.append(Problem(f"{kpath}.models", "empty list: this key serves no model", "warning"))
    if family == "vertex" and not provider.keys:
        out.append(Problem(f"{path}.keys", "vertex needs a key with vertex_key_config (project_id, region, auth_credentials)"))
    if not provider.keys:
        keyless = (known is not None and not known.needs_key) or (custom is not None and custom.is_key_less)
        if not keyless:
            out.append(
                Problem(f"{path}.keys", "no keys: requests go upstream without an API key", "warning")
            )


def _check_proxy(proxy: ProxyConfig, path: str, out: list[Problem]) -> None:
    """A proxy that cannot be used as configured is refused (requests would go around it)."""
    if proxy.type == "none":
        return
    if proxy.type == "socks5" and not socks_available():
        out.append(Problem(f"{path}.type", "socks5 proxies need python-socks: pip install 'rainbridge[socks]' "
                           "(refused rather than going direct)"))
        return
    if proxy.type == "environment":
        _note_environment_proxy(path, out)
    else:
        out.append(Problem(path, "enforced: this provider's upstream requests go through its proxy "
                           + ("(SOCKS5)" if proxy.type == "socks5" else "(CONNECT tunnels)"), "note"))
        if not proxy.url:
            out.append(Problem(f"{path}.url", f"required for an {proxy.type} proxy"))
        else:
            try:
                (Socks5Proxy if proxy.type == "socks5" else HttpProxy).from_url(proxy.url, proxy.username, proxy.password)
            except ValueError as exc:
                out.append(Problem(f"{path}.url", str(exc)))
    if bool(proxy.username) != bool(proxy.password):
        out.append(Problem(f"{path}.{'username' if proxy.username else 'password'}",
                           f"not sent: {'password' if proxy.username else 'username'} is empty, and credentials "
                           "are sent only when both are set (as in Bifrost)", "warning"))
    if proxy.ca_cert_pem:
        try:
            ssl.create_default_context().load_verify_locations(cadata=proxy.ca_cert_pem)
        except (ssl.SSLError, ValueError) as exc:
            out.append(Problem(f"{path}.ca_cert_pem", f"not a PEM CA certificate ({exc})"))


def _note_environment_proxy(path: str, out: list[Problem]) -> None:
    """Says which proxies this process's environment gives (what the gateway reads at start)."""
    try:
        env = environment_proxies()
    except ValueError as exc:
        out.append(Problem(f"{path}.type", f"environment proxy: {exc}"))
        return
    if env.https is None and env.http is None:
        out.append(Problem(f"{path}.type", "neither HTTPS_PROXY nor HTTP_PROXY is set here: this provider's "
                           "requests go direct (as in Bifrost)", "warning"))
        return
    shown = ", ".join(f"{scheme} {p.shown if p else 'direct'}" for scheme, p in (("https", env.https), ("http", env.http)))
    out.append(Problem(path, f"enforced: this provider's upstream requests go through the environment's proxy "
                       f"({shown}; {len(env.no_proxy)} NO_PROXY entries; loopback direct)", "note"))


ENTRA_FIELDS = ("client_id", "client_secret", "tenant_id")


def _entra_complete(azure: AzureKeyConfig | None, kpath: str, out: list[Problem]) -> bool:
    """Whether an Azure key names a whole Entra ID service principal; a partial one is refused
    (Bifrost's schema: the three fields require each other)."""
    given = [f for f in ENTRA_FIELDS if azure is not None and getattr(azure, f)]
    if given and len(given) < len(ENTRA_FIELDS):
        for field in ENTRA_FIELDS:
            if field not in given:
                out.append(Problem(f"{kpath}.azure_key_config.{field}", "required with the other Entra ID fields "
                                   "(client_id, client_secret and tenant_id name one service principal)"))
    return len(given) == len(ENTRA_FIELDS)


# Families whose endpoint is built per key from its region, not from a base URL.
REGIONAL = ("azure", "bedrock", "vertex")
_REGION = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")


def _check_bedrock_key(bedrock: BedrockKeyConfig | None, kpath: str, out: list[Problem]) -> None:
    if bedrock is None:
        return
    path = f"{kpath}.bedrock_key_config"
    if bool(bedrock.access_key) != bool(bedrock.secret_key):
        out.append(Problem(f"{path}.{'secret_key' if bedrock.access_key else 'access_key'}",
                           "access_key and secret_key go together (both empty: the default AWS credential chain)"))
    if bedrock.role_arn and not _ROLE_ARN.match(bedrock.role_arn):
        out.append(Problem(f"{path}.role_arn", f"not an IAM role ARN (arn:aws:iam::<account>:role/<name>): "
                           f"{bedrock.role_arn[:80]!r}"))
    if bedrock.region is not None and not _REGION.match(bedrock.region):
        out.append(Problem(f"{path}.region", f"not an AWS region name: {bedrock.region[:40]!r}"))


def _check_vertex_key(vertex: VertexKeyConfig | None, kpath: str, out: list[Problem]) -> None:
    path = f"{kpath}.vertex_key_config"
    if vertex is None or not vertex.project_id:
        out.append(Problem(f"{path}.project_id", "required for vertex: the Google Cloud project to call"))
        return
    if not _REGION.match(vertex.region):
        out.append(Problem(f"{path}.region", f"not a Vertex AI location: {vertex.region[:40]!r}"))
    problem = service_account_problem(vertex.auth_credentials)
    if problem:
        out.append(Problem(f"{path}.auth_credentials", problem))


def _installed(module: str) -> bool:
    """Whether an optional extra's library is importable (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


def service_account_problem(credentials: object) -> str | None:
    """Why ``auth_credentials`` is not usable, or None (empty: Application Default Credentials).
    The message never quotes the credentials."""
    if credentials in ("", None):
        return None
    try:
        info = service_account_info(credentials)
    except ValueError as exc:
        return str(exc)
    if not isinstance(info, dict):
        return "must be a service account key (a JSON object)"
    if info.get("type") != "service_account":
        return "only service account keys (\"type\": \"service_account\") are supported"
    missing = [f for f in ("client_email", "private_key", "token_uri") if not isinstance(info.get(f), str) or not info[f]]
    if missing:
        return f"the service account key lacks {', '.join(missing)}"
    return None


def _check_cluster(config: Config, out: list[Problem]) -> None:
    cluster = config.cluster_config
    if not cluster.enabled:
        return
    from ..cluster.config import knob_problems

    out.extend(Problem(path, message, severity) for path, message, severity in knob_problems(cluster))
    store = config.config_store
    if store is None or not store.enabled or store.type != "postgres":
        out.append(
            Problem(
                "$.cluster_config.enabled",
                "cluster mode needs the PostgreSQL config store: set config_store to "
                '{"enabled": true, "type": "postgres", "config": {"host": ..., "db_name": ...}}',
            )
        )
    discovery = cluster.discovery
    if not cluster.peers and not discovery.enabled:
        out.append(
            Problem("$.cluster_config", "cluster mode needs peers or discovery.enabled: true")
        )
    from ..cluster.discovery.fields import config_problems

    out.extend(Problem(path, message) for path, message in config_problems(discovery, cluster.peers))
    for i, cidr in enumerate(discovery.allowed_address_space):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            out.append(
                Problem(
                    child("$.cluster_config.discovery.allowed_address_space", i),
                    f"not a CIDR: {cidr!r}",
                )
            )
    for i, peer in enumerate(cluster.peers):
        host, sep, port = peer.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            out.append(
                Problem(child("$.cluster_config.peers", i), f"expected host:port, got {peer!r}")
            )
