-- rainbridge logs store, version 1: one row per request.
CREATE TABLE request_logs (
    id TEXT PRIMARY KEY,
    ts BIGINT NOT NULL,
    node_id TEXT NOT NULL,
    virtual_key_id TEXT,
    provider TEXT,
    model TEXT,
    endpoint TEXT NOT NULL,
    stream BOOLEAN NOT NULL DEFAULT FALSE,
    status INTEGER NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    cost DOUBLE PRECISION,
    error_type TEXT,
    request TEXT,
    response TEXT
);
CREATE INDEX request_logs_ts ON request_logs (ts, id);
CREATE INDEX request_logs_vk ON request_logs (virtual_key_id, ts);
