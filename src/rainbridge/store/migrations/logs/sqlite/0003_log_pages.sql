-- rainbridge logs store (SQLite), version 3: requests are written in pages, a batch per row
-- (store/log_pages.py says why and what a page holds). request_logs keeps the rows written
-- before this version: /api/logs reads both, retention deletes from both, nothing new goes
-- there. A page is unique by (max_ts, id) (a retried batch is written once) and listed
-- newest first by that index; request_log_page_keys finds the pages of a virtual key.
CREATE TABLE request_log_pages (
    id TEXT NOT NULL,
    id_prefix TEXT NOT NULL,
    first_row BIGINT NOT NULL,
    node_id TEXT NOT NULL,
    min_ts BIGINT NOT NULL,
    max_ts BIGINT NOT NULL,
    row_count INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    rows TEXT NOT NULL,
    content BLOB NOT NULL
);
CREATE UNIQUE INDEX request_log_pages_ts ON request_log_pages (max_ts, id);
CREATE TABLE request_log_page_keys (
    virtual_key_id TEXT NOT NULL,
    max_ts BIGINT NOT NULL,
    page_id TEXT NOT NULL,
    PRIMARY KEY (virtual_key_id, max_ts, page_id)
);
-- Every request as a row, for SQL (the pages unpacked, then the rows of versions 1-2):
-- what /api/logs lists. Reads every page it is asked about: filter on ts to stay quick.
CREATE VIEW request_log_entries AS
SELECT id, ts, node_id, virtual_key_id, provider, model, endpoint, stream, status, latency_ms, prompt_tokens,
       completion_tokens, cost, error_type,
       CASE WHEN request_bytes < 0 THEN NULL ELSE CAST(substr(content, at + 1, request_bytes) AS TEXT) END AS request,
       CASE WHEN response_bytes < 0 THEN NULL
            ELSE CAST(substr(content, at + 1 + max(request_bytes, 0), response_bytes) AS TEXT) END AS response
FROM (
    SELECT p.id_prefix || printf('%x', p.first_row + r.key) AS id,
           CAST(json_extract(r.value, '$[0]') * 1000 AS INTEGER) AS ts,
           p.node_id,
           json_extract(r.value, '$[2]') AS virtual_key_id,
           json_extract(r.value, '$[3]') AS provider,
           json_extract(r.value, '$[4]') AS model,
           json_extract(r.value, '$[5]') AS endpoint,
           json_extract(r.value, '$[6]') AS stream,
           json_extract(r.value, '$[7]') AS status,
           json_extract(r.value, '$[1]') * 1000.0 AS latency_ms,
           json_extract(r.value, '$[8]') AS prompt_tokens,
           json_extract(r.value, '$[9]') AS completion_tokens,
           json_extract(r.value, '$[10]') AS cost,
           json_extract(r.value, '$[11]') AS error_type,
           json_extract(r.value, '$[12]') AS request_bytes,
           json_extract(r.value, '$[13]') AS response_bytes,
           p.content,
           coalesce(sum(max(json_extract(r.value, '$[12]'), 0) + max(json_extract(r.value, '$[13]'), 0))
                    OVER (PARTITION BY p.id ORDER BY r.key ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS at
    FROM request_log_pages p, json_each(p.rows) r
)
UNION ALL
SELECT id, ts, node_id, virtual_key_id, provider, model, endpoint, stream, status, latency_ms, prompt_tokens,
       completion_tokens, cost, error_type, request, response
FROM request_logs;
