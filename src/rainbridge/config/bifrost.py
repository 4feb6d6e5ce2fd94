"""Bifrost's other ways of writing settings rainbridge has, folded into ours before validation.

The rule for the whole file: a setting that restricts access, spend or routing is either
enforced or refused at start-up with its path named, never warned about and dropped (a
dropped restriction opens the gateway wider than the file says). This module holds the
Bifrost forms that *are* enforced by mapping them onto our own fields, and the table of
restricting settings that are not supported yet and therefore refuse the file.

It works on the parsed JSON (before type checking), so every check is defensive about types:
a wrong type is left for the schema check to report.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .families import provider_family, unsupported_type
from .validate import Problem, child

GOVERNANCE_PLUGIN = "governance"
OTEL_PLUGIN = "otel"
NOTE = "note"  # a Problem severity: a Bifrost form that is used, said in rainbridge's terms
# Bifrost plugins whose job rainbridge does natively: no warning.
NATIVE_PLUGINS = {
    "telemetry": "Prometheus metrics are served at /metrics",
    "logging": "the request log follows client.enable_logging",
}

# Settings of Bifrost's governance plugin (plugins/governance Config) and what we do with each.
ENFORCED = "enforced"
REFUSED = "refused"
NO_EFFECT = "no effect"
GOVERNANCE_PLUGIN_FIELDS = {
    "is_vk_mandatory": ENFORCED,  # -> governance.is_vk_mandatory
    "required_headers": ENFORCED,  # -> client.required_headers
    "is_enterprise": NO_EFFECT,
    "disable_auto_tool_inject": NO_EFFECT,  # MCP tools: rainbridge serves no MCP
    "routing_chain_max_depth": ENFORCED,  # -> governance.routing_chain_max_depth
}

# Restricting settings rainbridge does not enforce yet: present and non-empty -> the file is
# refused. (path pattern, why). "*" stands for any provider name / list index.
UNSUPPORTED_RESTRICTIONS: tuple[tuple[str, str], ...] = (
    ("$.guardrails_config", "guardrails are not supported yet (requests they would block would be served)"),
    # Bifrost Enterprise's form of the same (docs/enterprise/guardrails.mdx, config.json tab).
    ("$.enterprise.guardrails", "guardrails are not supported yet (requests they would block would be served)"),
)
# Enforced since they were first refused: the governance plugin's required_headers
# (client.required_headers), custom_provider_config.allowed_requests and
# request_path_overrides (server/app.py, gateway/routing.py, providers/openai.py), a virtual
# key's provider_configs[].budget / rate_limit and governance.model_configs
# (governance/engine.py), client.header_filter_config (server/app.py), and
# governance.routing_rules (gateway/rules.py), a provider's proxy_config (upstream/proxy.py;
# its socks5 type is refused in checks.py).


def fold(raw: dict[str, Any], out: list[Problem]) -> None:
    """Apply Bifrost's forms to ``raw`` in place; append what is refused (errors) and notes."""
    _skip_unsupported_providers(raw, out)
    _skip_disabled_keys(raw, out)
    _skip_vertex_keys_without_project(raw, out)
    _default_vk_names(raw)
    _fold_plugins(raw, out)
    _fold_alias_objects(raw, out)
    _fold_key_urls(raw, out)
    _drop_allowed_request_comments(raw, out)
    _check_azure_entra(raw, out)
    _check_logs_store(raw, out)
    _warn_unused_sections(raw, out)
    _fold_auth_config(raw, out)
    _fold_provider_limits(raw, out)
    _fold_usage_seeds(raw, out)
    _note_rate_limit_alignment(raw, out)
    _note_enforced(raw, out)
    _refuse_unsupported(raw, out)
    _fold_digit_ports(raw)


# ----------------------------------------------------------------------------- providers


def _skip_unsupported_providers(raw: dict[str, Any], out: list[Problem]) -> None:
    """Bifrost providers without a rainbridge adapter are left out, one warning each, so the
    rest of the gateway starts (leaving one out never widens access: its grants stay)."""
    providers = raw.get("providers")
    if not isinstance(providers, dict):
        return
    for name in list(providers):
        entry = providers[name]
        if not isinstance(entry, dict):
            continue
        kind = unsupported_type(str(name), entry.get("type"), entry.get("custom_provider_config"))
        if kind is not None:
            del providers[name]
            what = f"provider {name!r}" if kind == name else f"provider {name!r} (type {kind!r})"
            out.append(Problem(child("$.providers", str(name)), f"{what} is not supported by rainbridge yet: skipped "
                               "(requests for its models answer 404)", "warning"))


def _skip_disabled_keys(raw: dict[str, Any], out: list[Problem]) -> None:
    """A key with ``"enabled": false`` (Bifrost's per-key switch) serves nothing, as in Bifrost:
    it is left out, said by a note (using it would spend on a key its owner turned off). A
    provider whose every key is off is skipped: without keys a keyless provider (ollama)
    would serve what Bifrost refuses."""
    providers = raw.get("providers")
    if not isinstance(providers, dict):
        return
    for name in list(providers):
        entry = providers[name]
        keys = entry.get("keys") if isinstance(entry, dict) else None
        if not isinstance(keys, list):
            continue
        ppath = child("$.providers", str(name))
        kept = []
        for i, key in enumerate(keys):
            if not isinstance(key, dict) or "enabled" not in key:
                kept.append(key)
                continue
            where = f"{child(f'{ppath}.keys', i)}.enabled"
            enabled = key.pop("enabled")
            if enabled is False:
                out.append(Problem(where, "false: this key is left out, as in Bifrost (it serves no request)", NOTE))
                continue
            if enabled is not True:
                out.append(Problem(where, f"expected true or false, got {enabled!r}"))
            kept.append(key)
        if kept or not keys:
            entry["keys"] = kept
        else:
            del providers[name]
            out.append(Problem(ppath, f"provider {name!r} has every key disabled: skipped "
                               "(requests for its models answer 404)", "warning"))


def _skip_vertex_keys_without_project(raw: dict[str, Any], out: list[Problem]) -> None:
    """A Vertex key without ``vertex_key_config.project_id`` can never be called (Bifrost's own
    examples/configs/loadtest has one; Bifrost starts and fails each request that picks it).
    It is left out with a warning naming it, and a Vertex provider left with no key is skipped
    like an unsupported one, so the rest of the gateway starts. Leaving a key out never widens
    access: a virtual key limited to it keeps no usable key."""
    providers = raw.get("providers")
    if not isinstance(providers, dict):
        return
    for name in list(providers):
        entry = providers[name]
        if not isinstance(entry, dict) or not isinstance(entry.get("keys"), list) or not entry["keys"]:
            continue
        custom = entry.get("custom_provider_config")
        base = custom.get("base_provider_type") if isinstance(custom, dict) else None
        kind = entry.get("type")
        if provider_family(str(name), kind if isinstance(kind, str) else None,
                           base if isinstance(base, str) else None) != "vertex":
            continue
        ppath = child("$.providers", str(name))
        kept = []
        for i, key in enumerate(entry["keys"]):
            vertex = key.get("vertex_key_config") if isinstance(key, dict) else None
            if isinstance(key, dict) and not (isinstance(vertex, dict) and vertex.get("project_id")):
                out.append(Problem(f"{child(f'{ppath}.keys', i)}.vertex_key_config.project_id", "missing: this key "
                                   "can never call Vertex AI, left out (Bifrost fails each request it picks it for)",
                                   "warning"))
            else:
                kept.append(key)
        if not kept:
            del providers[name]
            out.append(Problem(ppath, f"provider {name!r} has no key with a vertex_key_config.project_id: skipped "
                               "(requests for its models answer 404)", "warning"))
        else:
            entry["keys"] = kept


# Fields of Bifrost's object form of a key alias ({"model_id": ..., ...}) besides model_id.
ALIAS_FIELDS_IGNORED = ("model_name", "model_family", "description", "region", "project_id",
                        "project_number", "force_single_region", "inference_profile_arn",
                        "use_deployments_endpoint", "use_anthropic_endpoints", "anthropic_version")
# Routing overrides: the alias's requests would go elsewhere (another Azure resource or API
# version) than the file says, so they are refused rather than ignored.
ALIAS_FIELDS_REFUSED = ("endpoint", "api_version")


def _fold_alias_objects(raw: dict[str, Any], out: list[Problem]) -> None:
    """``keys[].aliases`` values may be ``"target"`` or ``{"model_id": "target", ...}``
    (Bifrost v1.5+); the object form becomes its ``model_id``."""
    for path, aliases in matches(raw, "$.providers.*.keys[*].aliases"):
        if not isinstance(aliases, dict):
            continue
        for alias, value in aliases.items():
            if not isinstance(value, dict):
                continue
            where = child(path, str(alias))
            target = value.get("model_id")
            if not isinstance(target, str) or not target:
                out.append(Problem(f"{where}.model_id", "required: the model name sent upstream"))
                continue
            for name in value:
                if name in ALIAS_FIELDS_REFUSED and value[name]:
                    out.append(Problem(child(where, name), "a per-alias routing override is not supported yet: "
                                       "remove it to start (use a separate key with its own endpoint)"))
                elif name != "model_id" and value[name] not in (None, "", False):
                    known = name in ALIAS_FIELDS_IGNORED
                    out.append(Problem(child(where, name), "not used by rainbridge (ignored)" if known
                                       else "unknown key (ignored)", "warning"))
            aliases[alias] = target


SERVER_KEY_CONFIGS = ("ollama_key_config", "vllm_key_config", "sgl_key_config")


def _fold_key_urls(raw: dict[str, Any], out: list[Problem]) -> None:
    """Self-hosted servers named per key (``keys[].{ollama,vllm,sgl}_key_config.url``, and
    vLLM's ``model_name``, the one model that server serves) become the provider's
    ``network_config.base_url`` and the key's ``models``. Keys on different servers need
    one provider each here: refused, so no request goes to the wrong server."""
    providers = raw.get("providers")
    if not isinstance(providers, dict):
        return
    for name, entry in providers.items():
        keys = entry.get("keys") if isinstance(entry, dict) else None
        if not isinstance(keys, list):
            continue
        ppath = child("$.providers", str(name))
        urls: list[tuple[str, str]] = []
        for i, key in enumerate(keys):
            for field in SERVER_KEY_CONFIGS:
                cfg = key.get(field) if isinstance(key, dict) else None
                if not isinstance(cfg, dict):
                    continue
                where = f"{child(f'{ppath}.keys', i)}.{field}"
                url = cfg.get("url")
                if isinstance(url, str) and url:
                    urls.append((f"{where}.url", url.rstrip("/").removesuffix("/v1")))
                model = cfg.get("model_name")
                if isinstance(model, str) and model:
                    models = key.get("models")
                    key["models"] = [model] if models in (None, ["*"]) or model in (models or []) else []
                    out.append(Problem(f"{where}.model_name", f"this key serves only {model!r} (as keys[].models)", NOTE))
                del key[field]
        if urls:
            _set_server_url(entry, ppath, urls, out)


def _drop_allowed_request_comments(raw: dict[str, Any], out: list[Problem]) -> None:
    """``allowed_requests`` entries named ``_…`` with a non-boolean value are comments (a
    deployment documents its switches that way); Bifrost's struct ignores names it does not
    know, so they are dropped with a warning instead of refusing the file. They allow nothing."""
    for path, allowed in matches(raw, "$.providers.*.custom_provider_config.allowed_requests"):
        if not isinstance(allowed, dict):
            continue
        for name in [n for n, v in allowed.items() if isinstance(n, str) and n.startswith("_") and not isinstance(v, bool)]:
            del allowed[name]
            out.append(Problem(child(path, name), "not a request type (a comment): ignored", "warning"))


def _set_server_url(entry: dict[str, Any], ppath: str, urls: list[tuple[str, str]], out: list[Problem]) -> None:
    network = entry.setdefault("network_config", {})
    if not isinstance(network, dict):
        return
    current = network.get("base_url")
    distinct = {url for _, url in urls} | ({current.rstrip("/")} if isinstance(current, str) and current else set())
    if len(distinct) > 1:
        for where, _url in urls:
            out.append(Problem(where, f"keys of one provider on different servers ({', '.join(sorted(distinct))}) are not "
                               "supported yet: declare one provider per server"))
        return
    network["base_url"] = urls[0][1]
    out.append(Problem(urls[0][0], "used as network_config.base_url", NOTE))


ENTRA_FIELDS = ("client_id", "client_secret", "tenant_id")


def _check_azure_entra(raw: dict[str, Any], out: list[Problem]) -> None:
    """Azure keys authenticated by an Entra ID service principal. With all three fields the
    service principal is used and the key's ``value`` is not, as Bifrost gives it precedence
    (a partial service principal is refused in checks.py, for the management API too)."""
    for path, azure in matches(raw, "$.providers.*.keys[*].azure_key_config"):
        if not isinstance(azure, dict) or not all(isinstance(azure.get(f), str) and azure[f] for f in ENTRA_FIELDS):
            continue
        if _at(raw, path.removesuffix(".azure_key_config"), "value"):
            out.append(Problem(f"{path}.client_id", "the Entra ID service principal is used and the key's value "
                               "is not (as in Bifrost)", "warning"))
        else:
            out.append(Problem(f"{path}.client_id", "authenticates with Entra ID tokens (client credentials)", NOTE))


def _at(raw: dict[str, Any], path: str, key: str) -> Any:
    for found_path, value in matches(raw, "$.providers.*.keys[*]"):
        if found_path == path and isinstance(value, dict):
            return value.get(key)
    return None


def _check_logs_store(raw: dict[str, Any], out: list[Problem]) -> None:
    store = raw.get("logs_store")
    if not isinstance(store, dict) or store.get("type") != "clickhouse":
        return
    del store["type"]  # reported here, not again by the schema check
    if store.get("enabled") is False:
        out.append(Problem("$.logs_store.type", "clickhouse is not supported; the logs store is disabled anyway (ignored)", "warning"))
    else:
        out.append(Problem("$.logs_store.type", "clickhouse is not supported: use \"postgres\" or \"sqlite\", "
                           "or set enabled: false"))


def _warn_unused_sections(raw: dict[str, Any], out: list[Problem]) -> None:
    """Bifrost sections that configure features rainbridge does not have are said to be
    ignored, never dropped silently: MCP tool servers (no tool reaches a model, so nothing is
    widened) and the vector store (Bifrost's semantic cache and local cache use it)."""
    mcp = raw.get("mcp")
    servers = mcp.get("client_configs") if isinstance(mcp, dict) else None
    if isinstance(servers, list) and servers:
        out.append(Problem("$.mcp.client_configs", f"MCP is not supported by rainbridge: {len(servers)} tool "
                           "server(s) not connected, no MCP tool is offered to models (ignored)", "warning"))
    store = raw.get("vector_store")
    if isinstance(store, dict) and store.get("enabled") is not False and store:
        out.append(Problem("$.vector_store", "only Bifrost's semantic and local caches use it, and rainbridge has "
                           "neither: requests are never answered from a cache (ignored)", "warning"))


def _default_vk_names(raw: dict[str, Any]) -> None:
    """Bifrost's examples give some virtual keys only an ``id``: it is their name too."""
    for _, vk in matches(raw, "$.governance.virtual_keys[*]"):
        if isinstance(vk, dict) and "name" not in vk and isinstance(vk.get("id"), str):
            vk["name"] = vk["id"]


# ----------------------------------------------------------------------------- plugins


def plugin_entries(plugins: Any) -> Iterator[tuple[str, str, Any]]:
    """(path, name, entry) for each plugin, in the list form of config.json
    (``[{"name", "enabled", "config"}]``) and the map form of Helm values (``{name: {...}}``)."""
    if isinstance(plugins, list):
        for i, entry in enumerate(plugins):
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                yield child("$.plugins", i), entry["name"], entry
    elif isinstance(plugins, dict):
        for name, entry in plugins.items():
            if isinstance(entry, dict):
                yield child("$.plugins", str(name)), str(name), entry


def _fold_otel(path: str, entry: dict[str, Any], out: list[Problem]) -> None:
    """Bifrost's otel plugin becomes rainbridge's tracing (telemetry/tracing.py): a profile
    that can never work stops start-up naming its field."""
    from ..telemetry.tracing import (
        TRACE_TYPES,
        TracingConfigError,
        foreign_trace_types,
        settings_from_plugins,
    )

    try:
        settings = settings_from_plugins([{**entry, "name": OTEL_PLUGIN}])
    except TracingConfigError as exc:
        field, _, message = str(exc).partition(": ")
        out.append(Problem(path + field.removeprefix("$.plugins[0]"), message))
        return
    for where, value in foreign_trace_types(entry.get("config"), f"{path}.config"):
        out.append(Problem(where, f"{value!r}: spans are exported as {TRACE_TYPES[0]!r}, as Bifrost does", "warning"))
    if settings is not None:
        out.append(Problem(path, f"plugin 'otel': traces go to {settings.collector_url} over OTLP/{settings.protocol}", NOTE))


def _fold_push_gateway(path: str, entry: dict[str, Any], out: list[Problem]) -> None:
    """The telemetry plugin's push_gateway (telemetry/push.py): a setting that can never
    work stops start-up naming its field."""
    from ..telemetry.push import PushConfigError, push_settings

    try:
        settings = push_settings([{**entry, "name": "telemetry"}])
    except PushConfigError as exc:
        field, _, message = str(exc).partition(": ")
        out.append(Problem(path + field.removeprefix("$.plugins[0]"), message))
        return
    if settings is not None:
        out.append(Problem(f"{path}.config.push_gateway", f"metrics are pushed to {settings.url} every "
                           f"{settings.interval_s:g}s as job={settings.job}, instance={settings.instance}", NOTE))


def _fold_plugins(raw: dict[str, Any], out: list[Problem]) -> None:
    for path, name, entry in plugin_entries(raw.get("plugins")):
        if name in NATIVE_PLUGINS:
            out.append(Problem(path, f"plugin {name!r}: {NATIVE_PLUGINS[name]}", NOTE))
            if name == "telemetry":
                _fold_push_gateway(path, entry, out)
            continue
        if name == OTEL_PLUGIN:
            _fold_otel(path, entry, out)
            continue
        if name != GOVERNANCE_PLUGIN:
            out.append(Problem(path, f"plugin {name!r} is not supported by rainbridge (ignored)", "warning"))
            continue
        config = entry.get("config")
        if entry.get("enabled") is False:
            if config:
                out.append(Problem(f"{path}.enabled", "the governance plugin is disabled: its config is not applied (as in Bifrost)", "warning"))
            continue
        if config is None:
            continue
        if not isinstance(config, dict):
            out.append(Problem(f"{path}.config", "expected object"))
            continue
        for key, value in config.items():
            where = child(f"{path}.config", str(key))
            effect = GOVERNANCE_PLUGIN_FIELDS.get(key)
            if effect is None:
                out.append(Problem(where, "unknown governance plugin setting (ignored)", "warning"))
            elif key == "is_vk_mandatory":
                _fold_vk_mandatory(raw, value, where, out)
            elif key == "required_headers":
                _fold_required_headers(raw, value, where, out)
            elif key == "routing_chain_max_depth":
                _fold_chain_depth(raw, value, where, out)
            elif effect == NO_EFFECT and value not in (None, False):
                out.append(Problem(where, "restricts nothing rainbridge serves (ignored)", "warning"))


def _fold_vk_mandatory(raw: dict[str, Any], value: Any, where: str, out: list[Problem]) -> None:
    if not isinstance(value, bool):
        out.append(Problem(where, f"expected boolean, got {type(value).__name__}"))
        return
    if value:
        require_virtual_key(raw)
        out.append(Problem(where, "enforced as governance.is_vk_mandatory", NOTE))


def _fold_chain_depth(raw: dict[str, Any], value: Any, where: str, out: list[Problem]) -> None:
    if value is None:
        return
    if type(value) is not int or value < 1:
        out.append(Problem(where, f"expected a positive integer, got {value!r}"))
        return
    gov = raw.setdefault("governance", {})
    if isinstance(gov, dict):
        gov["routing_chain_max_depth"] = value
        out.append(Problem(where, "enforced as governance.routing_chain_max_depth", NOTE))


def _fold_required_headers(raw: dict[str, Any], value: Any, where: str, out: list[Problem]) -> None:
    """The plugin's ``required_headers`` join ``client.required_headers`` (Bifrost's other
    place for them): a request missing any of them answers 400 missing_required_headers."""
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(h, str) and h.strip() for h in value):
        out.append(Problem(where, "expected an array of header names"))
        return
    client = raw.setdefault("client", {})
    if not isinstance(client, dict):
        return  # reported by the schema check
    current = client.get("required_headers")
    if current is not None and not isinstance(current, list):
        return  # reported by the schema check
    def same(entry: str) -> tuple[str, str]:  # names match in any case, values exactly
        name, sep, val = entry.partition("=")
        return name.strip().lower(), sep + val

    merged = list(current or [])
    merged += [h for h in value if same(h) not in {same(c) for c in merged if isinstance(c, str)}]
    client["required_headers"] = merged
    if value:
        out.append(Problem(where, "enforced as client.required_headers", NOTE))


def require_virtual_key(raw: dict[str, Any]) -> None:
    """Make every inference request need a virtual key (``governance.is_vk_mandatory``)."""
    gov = raw.setdefault("governance", {})
    if isinstance(gov, dict):  # any other type is reported by the schema check
        gov["is_vk_mandatory"] = True


# ----------------------------------------------------------------------------- auth_config


def _fold_auth_config(raw: dict[str, Any], out: list[Problem]) -> None:
    """Bifrost's dashboard login (``auth_config``, top level or under ``governance``).

    With ``is_enabled`` and without ``disable_auth_on_inference``, Bifrost requires a
    credential on inference too (older versions the admin login, newer ones a virtual key).
    rainbridge has no dashboard login; the nearest restriction that never widens access is
    to require a virtual key on inference. The management API keeps its own bearer token.
    """
    gov = raw.get("governance")
    candidates = [("$.auth_config", raw.get("auth_config"))]
    if isinstance(gov, dict):
        candidates.append(("$.governance.auth_config", gov.get("auth_config")))
    for path, auth in candidates:
        if not isinstance(auth, dict) or auth.get("is_enabled") is not True:
            continue
        if auth.get("disable_auth_on_inference") is not True:
            require_virtual_key(raw)
            out.append(Problem(path, "dashboard login is not supported: inference requires a virtual key instead "
                               "(set disable_auth_on_inference: true to keep inference open); the management API "
                               "uses client.admin_token", "warning"))
        else:
            out.append(Problem(path, "dashboard login is not supported: the management API uses client.admin_token", "warning"))


def _fold_provider_limits(raw: dict[str, Any], out: list[Problem]) -> None:
    """A provider's own ``budget_id`` / ``rate_limit_id`` (Bifrost's global provider budget,
    the same entry as a model limit on every model of the provider): folded into
    ``governance.model_configs`` as ``{"model_name": "*", "provider": name}``."""
    providers = raw.get("providers")
    if not isinstance(providers, dict):
        return
    for name, entry in providers.items():
        if not isinstance(entry, dict):
            continue
        refs = {f: entry.pop(f) for f in ("budget_id", "rate_limit_id") if f in entry}
        refs = {f: v for f, v in refs.items() if v not in (None, "")}
        if not refs:
            continue
        gov = raw.setdefault("governance", {})
        configs = gov.setdefault("model_configs", []) if isinstance(gov, dict) else None
        if not isinstance(configs, list):
            continue  # reported by the schema check
        configs.append({"id": f"provider:{name}", "model_name": "*", "provider": name, "scope": "global", **refs})
        for field in refs:
            out.append(Problem(f"{child('$.providers', str(name))}.{field}",
                               "enforced as a model limit on every model of this provider (governance.model_configs)", NOTE))
    _fold_governance_providers(raw, out)


PROVIDER_LIMIT_FIELDS = ("budget_id", "rate_limit_id", "budget", "rate_limit")


def _fold_governance_providers(raw: dict[str, Any], out: list[Problem]) -> None:
    """``governance.providers[]`` (Bifrost's governance table of providers: ``name`` with
    ``budget_id`` / ``rate_limit_id``, as a deployment limits each upstream's requests per
    minute) is the same global provider limit as ``providers.<name>.budget_id``: folded into
    ``governance.model_configs``. Anything else in an entry is refused by path, so no limit
    is dropped unread."""
    gov = raw.get("governance")
    entries = gov.get("providers") if isinstance(gov, dict) else None
    if entries is None:
        return
    if not isinstance(entries, list):
        out.append(Problem("$.governance.providers", "expected an array of {name, budget_id, rate_limit_id}"))
        return
    del gov["providers"]
    configs = gov.setdefault("model_configs", [])
    if not isinstance(configs, list):
        return  # reported by the schema check
    taken = {c.get("id") for c in configs if isinstance(c, dict)}
    for i, entry in enumerate(entries):
        path = child("$.governance.providers", i)
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            out.append(Problem(f"{path}.name", "required: the provider these limits are for"))
            continue
        for field in sorted(set(entry) - {"name", "id", *PROVIDER_LIMIT_FIELDS}):
            out.append(Problem(f"{path}.{field}", "not a provider limit rainbridge knows: refused rather than ignored"))
        limits = {f: entry[f] for f in PROVIDER_LIMIT_FIELDS if entry.get(f) not in (None, "")}
        if not limits:
            continue
        ident = f"provider:{name}"
        while ident in taken:
            ident += "+"
        taken.add(ident)
        configs.append({"id": ident, "model_name": "*", "provider": name, "scope": "global", **limits})
        out.append(Problem(path, "enforced as a model limit on every model of this provider (governance.model_configs)",
                           NOTE))


# Restricting Bifrost settings rainbridge enforces, said in `config check`'s "used" group.
ENFORCED_RESTRICTIONS: tuple[tuple[str, str], ...] = (
    ("$.client.required_headers", "requests without these headers answer 400 missing_required_headers"),
    ("$.client.header_filter_config", "filters the x-bf-eh-* headers forwarded upstream"),
    ("$.providers.*.custom_provider_config.allowed_requests", "other request types answer 400 request_type_not_allowed"),
    ("$.providers.*.custom_provider_config.request_path_overrides", "requests of these types go to these paths"),
    ("$.governance.virtual_keys[*].provider_configs[*].budget", "a budget on this provider's requests"),
    ("$.governance.virtual_keys[*].provider_configs[*].budget_id", "a budget on this provider's requests"),
    ("$.governance.virtual_keys[*].provider_configs[*].rate_limit", "a rate limit on this provider's requests"),
    ("$.governance.virtual_keys[*].provider_configs[*].rate_limit_id", "a rate limit on this provider's requests"),
    ("$.governance.model_configs", "model limits, checked with every other limit"),
    ("$.governance.routing_rules", "CEL routing rules, evaluated before governance picks a provider"),
)


USAGE_FIELDS = ("current_usage", "token_current_usage", "request_current_usage")


def _fold_usage_seeds(raw: dict[str, Any], out: list[Problem]) -> None:
    """Usage already spent that a budget or rate limit carries (Bifrost writes its state into
    the same objects): 0 is where counting starts anyway, so it is dropped quietly; more is
    refused by path, because starting from 0 would allow more spend than the file says."""
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for field in USAGE_FIELDS:
                if field in node:
                    value = node[field]
                    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
                        del node[field]
                    else:
                        out.append(Problem(f"{path}.{field}", f"usage already spent ({value!r}) cannot be carried "
                                           "over: counting starts at 0, which would allow more than the file says "
                                           "(remove it or set 0)"))
            for key, value in node.items():
                walk(value, child(path, str(key)))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, child(path, i))

    if isinstance(raw.get("governance"), dict):
        walk(raw["governance"], "$.governance")


def _note_rate_limit_alignment(raw: dict[str, Any], out: list[Problem]) -> None:
    """``calendar_aligned`` on a rate limit: true is how every window here works (snapped to UTC
    boundaries, so every node agrees); false, Bifrost's window counted from its last reset, is
    not, and is said so."""
    for path, value in matches(raw, "$.governance.rate_limits[*].calendar_aligned"):
        if value is False:
            out.append(Problem(path, "false: rate limit windows snap to UTC boundaries here (minute, hour, midnight, "
                               "...), not from the last reset", "warning"))
        elif value is True:
            out.append(Problem(path, "enforced: rate limit windows snap to UTC boundaries", NOTE))


def _note_enforced(raw: dict[str, Any], out: list[Problem]) -> None:
    for pattern, what in ENFORCED_RESTRICTIONS:
        for path, value in matches(raw, pattern):
            if _present(value):
                out.append(Problem(path, f"enforced: {what}", NOTE))


# ----------------------------------------------------------------------------- refusals


def _present(value: Any) -> bool:
    """Whether a setting restricts something: absent, null, false, empty (also an object of
    empty members, as {"allowlist": [], "denylist": []}) and proxy type "none" do not."""
    if value is None or value is False or value in ({}, [], ""):
        return False
    if isinstance(value, dict):
        if set(value) <= {"type"} and value.get("type") in (None, "", "none"):
            return False  # proxy_config: {"type": "none"}
        return any(_present(v) for v in value.values())
    return True


def matches(raw: Any, pattern: str) -> Iterator[tuple[str, Any]]:
    """(path, value) of every setting at ``pattern`` ("*": any key or index) in ``raw``."""
    parts = pattern[2:].replace("[*]", ".*").split(".")
    yield from _walk(raw, parts, "$")


def _walk(node: Any, parts: list[str], path: str) -> Iterator[tuple[str, Any]]:
    if not parts:
        yield path, node
        return
    head, rest = parts[0], parts[1:]
    if head == "*":
        if isinstance(node, list):
            for i, item in enumerate(node):
                yield from _walk(item, rest, child(path, i))
        elif isinstance(node, dict):
            for key, item in node.items():
                yield from _walk(item, rest, child(path, str(key)))
    elif isinstance(node, dict) and head in node:
        yield from _walk(node[head], rest, child(path, head))


def _refuse_unsupported(raw: dict[str, Any], out: list[Problem]) -> None:
    for pattern, why in UNSUPPORTED_RESTRICTIONS:
        for path, value in matches(raw, pattern):
            if pattern.startswith("$.plugins") and not _is_enabled_governance(raw, path):
                continue
            if _present(value):
                out.append(Problem(path, f"{why}: remove it to start (rainbridge refuses a restriction "
                                   "it would not enforce rather than ignore it)"))


def _is_enabled_governance(raw: dict[str, Any], path: str) -> bool:
    for entry_path, name, entry in plugin_entries(raw.get("plugins")):
        if path.startswith(entry_path + ".") and name == GOVERNANCE_PLUGIN:
            return entry.get("enabled") is not False
    return False


# ----------------------------------------------------------------------------- numbers

# Numbers Bifrost's schema (transports/config.schema.json) types as strings, which its Helm chart
# renders as strings ("5432"): a string of ASCII digits loads as that number here. The other
# such fields of Bifrost's schema name things rainbridge does not read: the ClickHouse logs
# store's port (ClickHouse is refused), the Datadog plugin's agent_port and dogstatsd_port
# (the plugin is ignored with a warning), MCP's tool_execution_timeout (no MCP). Every other
# number of Bifrost's schema is an integer there too, and a string is refused as Bifrost does.
DIGIT_STRING_FIELDS = ("$.config_store.config.port", "$.logs_store.config.port")


def _fold_digit_ports(raw: dict[str, Any]) -> None:
    for pattern in DIGIT_STRING_FIELDS:
        *parent_parts, key = pattern[2:].split(".")
        node: Any = raw
        for part in parent_parts:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(key), str) and node[key].isascii() and node[key].isdigit():
            node[key] = int(node[key])
