-- rainbridge config store, version 1: providers, keys, governance, counters.
-- Times are epoch milliseconds (BIGINT); JSON is TEXT; secrets are encrypted TEXT.
CREATE TABLE rb_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE providers (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'api',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE provider_keys (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL REFERENCES providers(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    models TEXT,
    weight DOUBLE PRECISION NOT NULL DEFAULT 1.0,
    config TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (provider, name)
);
CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL DEFAULT 'api',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE teams (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    customer_id TEXT REFERENCES customers(id) ON DELETE RESTRICT,
    source TEXT NOT NULL DEFAULT 'api',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE virtual_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    value_hash TEXT NOT NULL UNIQUE,
    value_hint TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    expires_at BIGINT,
    team_id TEXT REFERENCES teams(id) ON DELETE RESTRICT,
    customer_id TEXT REFERENCES customers(id) ON DELETE RESTRICT,
    provider_configs TEXT NOT NULL DEFAULT '[]',
    allow_all_providers BOOLEAN NOT NULL DEFAULT TRUE,
    source TEXT NOT NULL DEFAULT 'api',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE budgets (
    id TEXT PRIMARY KEY,
    owner_kind TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    max_limit DOUBLE PRECISION NOT NULL,
    reset_duration TEXT NOT NULL,
    calendar_aligned BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);
CREATE INDEX budgets_owner ON budgets (owner_kind, owner_id);
CREATE TABLE rate_limits (
    owner_kind TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    request_max_limit BIGINT,
    request_reset_duration TEXT,
    token_max_limit BIGINT,
    token_reset_duration TEXT,
    PRIMARY KEY (owner_kind, owner_id)
);
-- One row per node per counter window; a node's value only grows within a window, so
-- flushes are idempotent upserts with GREATEST and the counter's value is the sum.
CREATE TABLE counters (
    scope TEXT NOT NULL,
    counter_key TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    node_id TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (scope, counter_key, window_start, node_id)
);
CREATE INDEX counters_window ON counters (window_start);
