"""Typed schema of Bifrost's ``config.json`` (snake_case), as rainbridge reads it.

Every field is documented where it is defined, with units and defaults; the Helm chart's
``values.yaml`` comments use the same words. Fields Bifrost knows but rainbridge does not
use yet are declared so that a Bifrost file loads without warnings; anything else is
reported as an unknown key (a warning, never silently dropped).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

NonNegInt = Annotated[int, Meta(ge=0)]
PosInt = Annotated[int, Meta(ge=1)]
NonNegFloat = Annotated[float, Meta(ge=0)]
Port = Annotated[int, Meta(ge=0, le=65535)]


class Base(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Unknown fields are tolerated by msgspec; the validator reports them as warnings."""


# --------------------------------------------------------------------------- client


class HeaderFilterConfig(Base):
    allowlist: list[str] = []  # only these x-bf-eh-* headers are forwarded (empty: all)
    denylist: list[str] = []  # never forward these x-bf-eh-* headers


class ClientConfig(Base):
    initial_pool_size: PosInt = 300  # Bifrost's worker pool per provider; informational here
    drop_excess_requests: bool = False  # provider queue full -> 429 at once instead of waiting
    enable_logging: bool = False  # write every request to the logs store
    disable_content_logging: bool = False  # log metadata only, never message content
    log_retention_days: PosInt = 365  # days request logs are kept
    logging_headers: list[str] = []  # request headers copied into log metadata
    max_request_body_size_mb: PosInt = 100  # larger request bodies get 413
    # CORS: origins whose pages may call the gateway ("*" = any). None by default: a web page
    # must not drive a gateway on localhost with the user's provider keys.
    allowed_origins: list[str] = []
    allowed_headers: list[str] = []  # extra CORS request headers to allow
    prometheus_labels: list[str] = []  # extra metric labels
    enforce_governance_header: bool = False  # deprecated Bifrost name of enforce_auth_on_inference
    enforce_auth_on_inference: bool = False  # inference needs a virtual key
    # Headers every inference request must carry, else 400 missing_required_headers naming them:
    # "Name" (case-insensitive, non-empty), "Name=value" (exactly that value), "Name=env.VAR"
    # (the variable's value, read at start-up). Bifrost's governance plugin
    # config.required_headers is folded in here (config/bifrost.py).
    required_headers: list[str] = []
    admin_token: str | None = None  # bearer token for /api/* (or RAINBRIDGE_ADMIN_TOKEN)
    # Which x-bf-eh-<name> headers are forwarded upstream (names without the prefix,
    # case-insensitive): a non-empty allowlist forwards only those, a denylist never those.
    header_filter_config: HeaderFilterConfig | None = None
    disable_db_pings_in_health: bool = False  # /health does not ping the store
    dump_errors_in_console_logs: bool = False  # log provider error bodies (never keys)
    # Bifrost: clients may send their own provider keys. rainbridge never forwards a client's
    # provider key, so false is what it does; true is warned about (narrower, never wider).
    allow_direct_keys: bool = False
    enable_litellm_fallbacks: bool = False  # accepted, unused (Bifrost's LiteLLM-style fallback switch)


# --------------------------------------------------------------------------- providers


class AzureKeyConfig(Base):
    endpoint: str = ""  # https://<resource>.openai.azure.com (falls back to network_config.base_url)
    deployments: dict[str, str] = {}  # model name -> deployment name (default: the model name)
    api_version: str | None = None  # Azure api-version query parameter (default 2024-10-21)
    # Entra ID service principal (all three or none): requests carry a bearer token from the
    # client-credentials flow instead of the key's value. The secret is stored sealed, never shown.
    client_id: str = ""
    client_secret: str = ""  # env.VAR allowed; never logged
    tenant_id: str = ""
    scopes: list[str] = []  # token scopes (default: https://cognitiveservices.azure.com/.default)


class BedrockKeyConfig(Base):
    """AWS credentials of one Bedrock key (Bifrost's ``bedrock_key_config``). A key with a
    ``value`` is a Bedrock API key (``Authorization: Bearer``); otherwise requests are signed
    with SigV4 using access_key/secret_key, or, both empty, botocore's default credential chain
    (environment, shared files, web identity / IAM role, instance metadata)."""

    access_key: str = ""  # AWS access key id; env.VAR allowed
    secret_key: str = ""  # AWS secret access key; env.VAR allowed; never logged
    session_token: str | None = None  # temporary credentials' session token; never logged
    region: str | None = None  # AWS region of bedrock-runtime (default us-east-1)
    # Inference-profile ARN prefix: the model id sent becomes "{arn}/{deployment}".
    arn: str | None = None
    deployments: dict[str, str] = {}  # model name -> Bedrock model id / inference profile
    # STS AssumeRole (providers/aws_sigv4.py): the key signs with the role's temporary
    # credentials, assumed with its access_key/secret_key or the default chain.
    role_arn: str | None = None
    external_id: str | None = None
    session_name: str | None = None
    project_id: str | None = None  # Bedrock Mantle only; unused by the Converse API
    batch_s3_config: Any = None  # accepted, unused (batch API)


class VertexKeyConfig(Base):
    """Google Cloud project and credentials of one Vertex AI key (``vertex_key_config``)."""

    project_id: str = ""  # Google Cloud project id (required)
    project_number: str = ""  # accepted, unused
    region: str = "us-central1"  # Vertex location, e.g. us-central1, europe-west4 or global
    # Service-account JSON (the file's text or the object); empty: Application Default Credentials.
    auth_credentials: Any = ""
    force_single_region: bool = False  # accepted, unused (multi-region pools are not used)


class KeyConfig(Base):
    id: str | None = None  # stable id (management API); defaults to the name
    name: str = ""  # unique per provider; used in logs and virtual key pins
    value: str = ""  # the API key, or env.VAR_NAME; never logged
    # Models this key serves: ["*"] = all (the default when absent); [] = none.
    models: list[str] | None = None
    blacklisted_models: list[str] = []  # models this key must never serve
    weight: NonNegFloat = 1.0  # relative share in weighted random key choice
    azure_key_config: AzureKeyConfig | None = None
    openai_key_config: dict[str, Any] | None = None  # accepted, unused
    vertex_key_config: VertexKeyConfig | None = None
    bedrock_key_config: BedrockKeyConfig | None = None
    aliases: dict[str, str] = {}  # model alias -> upstream model name for this key
    use_for_batch_api: bool = False  # accepted, unused
    # Region(s) this key serves best: a node prefers keys of its cluster_config.region, then
    # keys without a region, then other regions' keys (gateway/keys.py).
    region: str | list[str] | None = None


class NetworkConfig(Base):
    # scheme://host[:port] without the API version path; the adapter appends /v1/...
    # Missing: the provider's public endpoint.
    base_url: str | None = None
    extra_headers: dict[str, str] = {}  # sent with every upstream request
    default_request_timeout_in_seconds: PosInt = 30  # whole non-streaming request
    max_retries: NonNegInt = 0  # retries after the first attempt, per provider
    retry_backoff_initial: NonNegInt = 500  # ms; backoff = min(initial * 2^n, max) +-20 %
    retry_backoff_max: NonNegInt = 5000  # ms
    stream_idle_timeout_in_seconds: PosInt = 60  # max silence between two stream chunks
    max_conns_per_host: NonNegInt = 0  # pooled connections per upstream host (0 = 1000)
    insecure_skip_verify: bool = False  # do not verify upstream TLS certificates
    ca_cert_pem: str | None = None  # extra CA certificate (PEM) for upstream TLS


class ConcurrencyAndBufferSize(Base):
    concurrency: PosInt = 1000  # upstream requests in flight per provider
    buffer_size: NonNegInt = 5000  # requests that may wait for a slot


class CustomProviderConfig(Base):
    base_provider_type: str = "openai"  # the API family this custom provider speaks
    is_key_less: bool = False  # no API key is sent
    # Bifrost: only the request types set to true are served (an omitted type is not); absent
    # or null: every type. Others answer 400 request_type_not_allowed; a fallback that does
    # not allow the type is skipped; list_models false leaves the provider out of /v1/models.
    allowed_requests: dict[str, bool] | None = None
    # Bifrost: request type -> upstream path under network_config.base_url (a leading "/" is
    # added), or an absolute http(s) URL; "" keeps the default. A stream uses its *_stream
    # entry, else the plain type's. OpenAI-compatible providers only (others are refused).
    request_path_overrides: dict[str, str] | None = None


class ProxyConfig(Base, kw_only=True):
    """Bifrost's per-provider proxy (upstream/proxy.py says where each field is defined)."""

    type: Literal["none", "http", "socks5", "environment"]  # socks5 needs rainbridge[socks]
    url: str | None = None  # http://[user:pass@]host:port, socks5://host:port
    username: str | None = None  # with password: Proxy-Authorization Basic
    password: str | None = None  # env.VAR allowed; never logged
    ca_cert_pem: str | None = None  # extra CA for the provider's TLS (SSL-intercepting proxies)


class ProviderConfig(Base):
    # rainbridge extension: the API family ("openai", "azure", "anthropic", "gemini") for a provider
    # under a name of your choice; Bifrost's custom_provider_config.base_provider_type works too.
    type: str | None = None
    keys: list[KeyConfig] = []
    network_config: NetworkConfig = msgspec.field(default_factory=NetworkConfig)
    concurrency_and_buffer_size: ConcurrencyAndBufferSize = msgspec.field(
        default_factory=ConcurrencyAndBufferSize
    )
    custom_provider_config: CustomProviderConfig | None = None
    proxy_config: ProxyConfig | None = None  # upstream requests through an HTTP proxy
    send_back_raw_response: bool = False  # accepted, unused
    send_back_raw_request: bool = False  # accepted, unused


# --------------------------------------------------------------------------- stores


class StoreSettings(Base):
    path: str | None = None  # sqlite file (default <app-dir>/config.db or logs.db)
    dsn: str | None = None  # postgres://user:pass@host:port/db (instead of the fields below)
    host: str | None = None
    port: Port = 5432
    user: str | None = None
    password: str | None = None  # env.VAR allowed; never logged
    db_name: str | None = None
    ssl_mode: str = "disable"  # disable | allow | prefer | require | verify-ca | verify-full
    max_open_conns: PosInt = 20  # pool size
    max_idle_conns: NonNegInt = 5  # connections kept open when idle


class StoreConfig(Base):
    enabled: bool = True
    type: Literal["sqlite", "postgres"] = "sqlite"
    config: StoreSettings = msgspec.field(default_factory=StoreSettings)
    writer: Any = None  # Bifrost's log writer batching; accepted, unused


# --------------------------------------------------------------------------- governance


class BudgetConfig(Base, kw_only=True):
    id: str | None = None
    max_limit: NonNegFloat  # USD per window
    reset_duration: str  # 1m 1h 1d 1w 1M 1Q 1Y (any N + unit: 30s, 15m, 7d)
    calendar_aligned: bool = False  # snap windows to UTC calendar boundaries (else count from creation)
    # Bifrost's other way to attach a shared budget (governance.budgets only): the budget names
    # its owner instead of the owner naming the budget. At most one of the three.
    virtual_key_id: str | None = None
    team_id: str | None = None
    customer_id: str | None = None


class RateLimitConfig(Base):
    id: str | None = None
    metric: str | None = None  # Bifrost's single-metric rows (model_configs[].rate_limit_ids): requests | tokens
    request_max_limit: NonNegInt | None = None  # requests per request_reset_duration
    request_reset_duration: str | None = None
    token_max_limit: NonNegInt | None = None  # tokens (prompt + completion) per token_reset_duration
    token_reset_duration: str | None = None
    # Bifrost's switch; rate limit windows here always snap to UTC boundaries (README, Governance),
    # which is what true asks for. Accepted so a Bifrost file starts; false is warned about.
    calendar_aligned: bool | None = None


class GrantKeyRef(Base):
    """One provider key a virtual key may use, in the Helm chart's form ``{"name": ...}``."""

    key_id: str | None = None  # the key's id
    name: str | None = None  # the key's name


class OwnerLimits(Base):
    """Budgets and a rate limit, inline or by reference to governance.budgets / rate_limits."""

    budget_id: str | None = None
    budget_ids: list[str] = []
    budget: BudgetConfig | None = None
    budgets: list[BudgetConfig] = []
    rate_limit_id: str | None = None
    rate_limit: RateLimitConfig | None = None


class ProviderGrantConfig(OwnerLimits, kw_only=True):
    """One provider a virtual key may use. Its budgets and rate limit (inherited fields, as
    Bifrost's provider_configs[].budget / rate_limit / budget_id / rate_limit_id) count only
    the key's requests this provider serves, on top of the key's own."""

    provider: str
    weight: NonNegFloat = 1.0  # share when the model names no provider
    allowed_models: list[str] | None = None  # None or ["*"]: all; [] : none (Bifrost v2)
    # Provider keys (ids or names) this VK may use: absent = all, ["*"] = all, [] = none.
    key_ids: list[str] | None = None
    keys: list[GrantKeyRef] | None = None  # the same as key_ids, Helm form; both: their union

    def __post_init__(self) -> None:
        # The Helm form joins key_ids here, so every reader of this struct (the config file
        # and the management API alike) sees one list: dropping it would allow every key.
        if self.keys is not None:
            named = [n for ref in self.keys for n in (ref.key_id, ref.name) if n]
            self.key_ids = [*(self.key_ids or ()), *named]


class ModelConfigConfig(OwnerLimits, kw_only=True):
    """Bifrost's model limit (``governance.model_configs``): budgets and rate limits on the
    requests for one model (or ``*``), optionally of one provider, of all traffic (``global``)
    or of one virtual key (``virtual_key`` + ``scope_id``)."""

    id: str | None = None
    model_name: str
    provider: str | None = None  # None: any provider
    scope: str = "global"  # global | virtual_key
    scope_id: str | None = None  # the virtual key's id (scope virtual_key)
    rate_limit_ids: list[str] = []  # several windows (governance.rate_limits ids)
    calendar_aligned: bool = False


class CustomerConfig(OwnerLimits, kw_only=True):
    id: str | None = None  # default: the name
    name: str


class TeamConfig(OwnerLimits, kw_only=True):
    id: str | None = None
    name: str
    customer_id: str | None = None


class VirtualKeyConfig(OwnerLimits, kw_only=True):
    id: str | None = None
    name: str  # in the config file it defaults to the id (Bifrost's examples give some keys only an id)
    # The key clients send (env.VAR allowed). Absent: generated once into
    # <app-dir>/generated-virtual-keys/ (the log names the file); required with the PostgreSQL store.
    value: str | None = None
    description: str = ""
    is_active: bool = True
    expires_at: str | int | None = None  # RFC 3339 time or epoch milliseconds
    team_id: str | None = None
    customer_id: str | None = None
    provider_configs: list[ProviderGrantConfig] = []
    allow_all_providers: bool | None = None  # default: true when provider_configs is empty


class RoutingTargetConfig(Base, kw_only=True):
    """Where a matching rule sends a request (one of a rule's weighted targets)."""

    provider: str | None = None  # absent: the request's current provider
    model: str | None = None  # absent: the request's current model
    key_id: str | None = None  # pin one provider key (its id or name); needs provider
    provider_key_name: str | None = None  # the same by the key's name (config.json form)
    weight: float  # a rule's weights sum to 1; the target is drawn by weight


class RoutingFallbackConfig(Base, kw_only=True):
    provider: str
    model: str | None = None  # absent: the request's incoming model
    key_id: str | None = None  # pin one provider key for this attempt
    provider_key_name: str | None = None  # the same by the key's name (config.json form)


class RoutingRuleConfig(Base, kw_only=True):
    """Bifrost's routing rule: when ``cel_expression`` holds, the request goes to one of
    ``targets`` (see gateway/rules.py for the order rules are tried in)."""

    id: str | None = None  # default: the name
    name: str
    description: str = ""
    enabled: bool = True
    chain_rule: bool = False  # re-evaluate every rule with the resolved provider/model
    cel_expression: str = ""  # empty: always matches; at most 4096 characters
    targets: list[RoutingTargetConfig] = []
    # "provider/model" ("provider/" keeps the incoming model) or an object; replace the
    # request's own fallbacks when the rule decides (none given: the request's stay).
    fallbacks: list[str | RoutingFallbackConfig] = []
    scope: str = "global"  # global | customer | team | virtual_key
    scope_id: str | None = None  # the customer's, team's or virtual key's id (not for global)
    priority: int = 0  # lower first, within a scope
    # How a target is chosen: weighted (by weight); Bifrost's adaptive is drawn by the
    # configured weights too (no latency feedback); priority (targets in rank order) is refused.
    strategy: str = "weighted"


class GovernanceConfig(Base):
    is_vk_mandatory: bool = False  # every inference request needs a virtual key
    virtual_keys: list[VirtualKeyConfig] = []
    teams: list[TeamConfig] = []
    customers: list[CustomerConfig] = []
    budgets: list[BudgetConfig] = []
    rate_limits: list[RateLimitConfig] = []
    auth_config: Any = None  # accepted (Bifrost's dashboard login)
    routing_rules: list[RoutingRuleConfig] = []  # CEL routing rules (gateway/rules.py)
    # Bifrost's governance plugin setting: chain_rule steps evaluated at most per request.
    routing_chain_max_depth: PosInt = 10
    model_configs: list[ModelConfigConfig] = []  # model limits (governance/engine.py)


class PriceOverride(Base, kw_only=True):
    input_cost_per_token: NonNegFloat  # USD
    output_cost_per_token: NonNegFloat = 0.0


# --------------------------------------------------------------------------- cluster


class GossipTimingConfig(Base):
    """Failure detection in Bifrost's terms (see ``cluster.config.from_bifrost_gossip``)."""

    # Expected seconds from a crash until every member has declared it dead (clusters of up
    # to 10; larger ones scale by log10 N): probe interval = timeout / (failure_threshold + 2).
    timeout_seconds: PosInt = 10
    # Consecutive successful probes before a member that came back counts as healthy again.
    success_threshold: PosInt = 3
    # Suspicion multiplier: probe intervals a suspected member has to refute before it is dead.
    failure_threshold: PosInt = 3


class GossipConfig(Base):
    port: Port = 7946  # UDP + TCP
    bind_address: str | None = None  # default: the HTTP host (all interfaces for 0.0.0.0)
    advertise_address: str | None = None  # default: bind address when specific, else pod IP
    profile: Literal["lan", "wan", "local"] = "lan"  # memberlist timing preset
    label: str | None = None  # cluster label bound to every packet
    encryption_keys: list[str] = []  # base64 AES keys; the first encrypts, all decrypt
    config: GossipTimingConfig = msgspec.field(default_factory=GossipTimingConfig)


class DiscoveryConfig(Base):
    enabled: bool = False
    type: Literal["kubernetes", "dns", "static", "consul", "etcd", "udp", "mdns"] | None = None
    service_name: str | None = None  # consul / etcd / udp / mdns service name
    k8s_namespace: str | None = None
    k8s_label_selector: str | None = None
    dns_names: list[str] = []  # headless service names whose A/AAAA records are peers
    consul_address: str | None = None  # host:port of the Consul agent
    etcd_endpoints: list[str] = []
    mdns_service: str | None = None  # e.g. _bifrost._tcp
    udp_broadcast_port: Port | None = None
    allowed_address_space: list[str] = []  # CIDRs every peer address must fall in
    # Bifrost's port of the discovery listener; rainbridge's backends find the gossip port
    # (cluster_config.gossip.port), so this is accepted and used only where a backend says.
    bind_port: Port | None = None
    dial_timeout: str | float | None = None  # Go duration ("10s", "500ms") or seconds
    # Ours: host:port of the DNS server the dns backend asks (default: the system resolvers).
    dns_server: str | None = None
    interval_seconds: Annotated[float, Meta(gt=0, le=3600)] = 5.0  # ours: seconds between discovery rounds
    udp_secret: str | None = None  # ours: HMAC key of udp announcements; env.VAR allowed


class GrpcConfig(Base):
    """Bifrost's point-to-point counter-sync channel in mesh mode (Helm ``cluster.grpc``).
    rainbridge builds no separate channel: sync rides the gossip port (UDP + TCP), so this
    block is accepted and warned about (see ``cluster.config.knob_problems``)."""

    port: Port = 10102  # Bifrost's default
    dial_timeout_seconds: PosInt = 5


class BrokerConfig(Base):
    """Bifrost's broker mode (members sync through a central broker): refused at start-up
    when ``type: broker``; the fields are typed loosely so the refusal is the message seen."""

    address: str | None = None  # host:port of the broker
    tls: Any = None  # Bifrost: TLS towards the broker
    auth_token: str | None = None  # never logged
    listen_port: Port | None = None


class ClusterConfig(Base):
    enabled: bool = False
    # "mesh": members talk to each other (gossip, point to point) - what rainbridge does;
    # "broker": through a central broker - not supported, refused at start-up.
    type: Literal["mesh", "broker"] = "mesh"
    grpc: GrpcConfig | None = None
    broker: BrokerConfig | None = None
    node_name: str | None = None  # stable name; default the host name
    region: str | None = None
    peers: list[str] = []  # host:port; may include this node
    gossip: GossipConfig = msgspec.field(default_factory=GossipConfig)
    discovery: DiscoveryConfig = msgspec.field(default_factory=DiscoveryConfig)


# --------------------------------------------------------------------------- drain


class DrainConfig(Base):
    """SIGTERM as Kubernetes sends it (after the preStop sleep): readiness 503 at once, the
    listener keeps accepting for ``accept_seconds`` (late-routed connections are served), then
    closes; requests and streams in flight run up to ``grace_seconds`` after the signal, then
    are cut (a stream with a final ``server_shutting_down`` error event and ``[DONE]``).
    Env ``RAINBRIDGE_DRAIN_ACCEPT_SECONDS`` / ``RAINBRIDGE_DRAIN_GRACE_SECONDS`` override."""

    # 0: stop accepting at once (a plain SIGTERM / Ctrl-C); the Helm chart sets 5, time for
    # the endpoint removal to reach every kube-proxy and ingress after the preStop sleep.
    accept_seconds: Annotated[float, Meta(ge=0, le=3600)] = 0.0
    # 60: fits Kubernetes' terminationGracePeriodSeconds 90 minus a 20 s preStop sleep, with
    # 10 s to spare. None: RAINBRIDGE_GRACEFUL_TIMEOUT_SECONDS, else 60.
    grace_seconds: Annotated[float, Meta(ge=0, le=86400)] | None = None


# --------------------------------------------------------------------------- root


class Config(Base):
    schema_url: str | None = msgspec.field(default=None, name="$schema")
    version: Literal[1, 2] = 2  # 2: an empty models list serves none; 1: empty serves all
    encryption_key: str | None = None  # secrets at rest; env.VAR allowed
    client: ClientConfig = msgspec.field(default_factory=ClientConfig)
    providers: dict[str, ProviderConfig] = {}
    config_store: StoreConfig | None = None
    logs_store: StoreConfig | None = None
    governance: GovernanceConfig = msgspec.field(default_factory=GovernanceConfig)
    pricing_overrides: dict[str, PriceOverride] = {}  # "model" or "provider/model" -> price
    # [{"name", "enabled", "config"}] or the Helm map {name: {"enabled", "config"}}: see
    # config/bifrost.py (governance is applied, telemetry/logging are native, others warned).
    plugins: list[Any] | dict[str, Any] | None = None
    cluster_config: ClusterConfig = msgspec.field(default_factory=ClusterConfig)
    drain: DrainConfig = msgspec.field(default_factory=DrainConfig)  # ours: SIGTERM drain
    # Bifrost sections rainbridge accepts without using:
    auth_config: Any = None
    framework: Any = None
    mcp: Any = None
    vector_store: Any = None
    guardrails_config: Any = None  # not supported: refused when it has rules
    source_of_truth: str | None = None
    env_label: str | None = None
    server: Any = None
    websocket: Any = None
