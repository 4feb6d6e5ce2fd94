-- rainbridge config store, version 4: model limits (Bifrost's governance.model_configs, and
-- its /api/governance/model-configs). Budgets and rate limit windows are JSON: a model limit
-- may count several windows, and its budgets' windows count from the epoch (as in the file).
-- A limit scoped to one virtual key goes with the key.
CREATE TABLE model_configs (
    id TEXT PRIMARY KEY,
    model_name TEXT NOT NULL,
    provider TEXT,
    vk_id TEXT REFERENCES virtual_keys(id) ON DELETE CASCADE,
    budgets TEXT NOT NULL DEFAULT '[]',
    rate_limits TEXT NOT NULL DEFAULT '[]',
    source TEXT NOT NULL DEFAULT 'api',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
