-- rainbridge config store, version 5: routing rules (Bifrost's governance.routing_rules, and
-- its /api/routing/rules). A rule is kept as the JSON Bifrost's API takes (targets and
-- fallbacks nest); the gateway compiles it when it loads the store.
CREATE TABLE routing_rules (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'api',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
