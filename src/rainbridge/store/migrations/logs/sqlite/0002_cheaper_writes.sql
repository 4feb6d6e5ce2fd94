-- rainbridge logs store (SQLite), version 2: fewer b-trees for the writer to insert into.
-- Version 1 had four per row (the table, the primary key on id, (ts, id) and
-- (virtual_key_id, ts)). Now three, two for a request without a virtual key: one unique
-- index on (ts, id) both orders /api/logs (newest first, the cursor) and keeps a retried
-- batch from being written twice (ids are unique by construction); the virtual key index
-- holds only the rows that have one (a filter `virtual_key_id = ?` implies it), ordered as
-- /api/logs lists them (version 1 sorted a key's rows by id for each page). The table
-- is rebuilt (SQLite cannot drop a primary key) and every row is kept.
CREATE TABLE request_logs_v2 (
    id TEXT NOT NULL,
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
INSERT INTO request_logs_v2 (id, ts, node_id, virtual_key_id, provider, model, endpoint, stream, status, latency_ms,
                             prompt_tokens, completion_tokens, cost, error_type, request, response)
    SELECT id, ts, node_id, virtual_key_id, provider, model, endpoint, stream, status, latency_ms,
           prompt_tokens, completion_tokens, cost, error_type, request, response
    FROM request_logs ORDER BY ts, id;
DROP TABLE request_logs;
ALTER TABLE request_logs_v2 RENAME TO request_logs;
CREATE UNIQUE INDEX request_logs_ts ON request_logs (ts, id);
CREATE INDEX request_logs_vk ON request_logs (virtual_key_id, ts, id) WHERE virtual_key_id IS NOT NULL;
