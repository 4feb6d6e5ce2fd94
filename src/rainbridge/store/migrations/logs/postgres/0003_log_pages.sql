-- rainbridge logs store version 3: requests are written in pages, a batch per row
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
    content BYTEA NOT NULL
);
CREATE UNIQUE INDEX request_log_pages_ts ON request_log_pages (max_ts, id);
CREATE TABLE request_log_page_keys (
    virtual_key_id TEXT NOT NULL,
    max_ts BIGINT NOT NULL,
    page_id TEXT NOT NULL,
    PRIMARY KEY (virtual_key_id, max_ts, page_id)
);
-- A page's rows and bodies are large values (TOASTed): compressed with lz4 where the server
-- can (PostgreSQL 14+ built with lz4), ~5x less server CPU per page than the default pglz;
-- elsewhere the default stays.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE request_log_pages ALTER COLUMN rows SET COMPRESSION lz4, '
            'ALTER COLUMN content SET COMPRESSION lz4';
EXCEPTION WHEN syntax_error OR feature_not_supported THEN
    NULL;
END
$$;
-- Every request as a row, for SQL (the pages unpacked, then the rows of versions 1-2):
-- what /api/logs lists, content as the bytes that came (convert_from(request_body, 'UTF8')
-- reads it as text where it is UTF-8). Reads every page it is asked about: filter on ts.
CREATE VIEW request_log_entries AS
SELECT id, ts, node_id, virtual_key_id, provider, model, endpoint, stream, status, latency_ms, prompt_tokens,
       completion_tokens, cost, error_type,
       CASE WHEN request_bytes < 0 THEN NULL ELSE substring(content FROM (at + 1)::integer FOR request_bytes) END AS request_body,
       CASE WHEN response_bytes < 0 THEN NULL
            ELSE substring(content FROM (at + 1 + greatest(request_bytes, 0))::integer FOR response_bytes) END AS response_body
FROM (
    SELECT p.id_prefix || to_hex(p.first_row + r.n - 1) AS id,
           trunc((r.f->>0)::float8 * 1000)::bigint AS ts,
           p.node_id,
           r.f->>2 AS virtual_key_id,
           r.f->>3 AS provider,
           r.f->>4 AS model,
           r.f->>5 AS endpoint,
           (r.f->>6)::boolean AS stream,
           (r.f->>7)::integer AS status,
           (r.f->>1)::float8 * 1000.0 AS latency_ms,
           (r.f->>8)::bigint AS prompt_tokens,
           (r.f->>9)::bigint AS completion_tokens,
           (r.f->>10)::float8 AS cost,
           r.f->>11 AS error_type,
           (r.f->>12)::integer AS request_bytes,
           (r.f->>13)::integer AS response_bytes,
           p.content,
           coalesce(sum(greatest((r.f->>12)::integer, 0) + greatest((r.f->>13)::integer, 0))
                    OVER (PARTITION BY p.id ORDER BY r.n ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS at
    FROM request_log_pages p CROSS JOIN LATERAL json_array_elements(p.rows::json) WITH ORDINALITY AS r(f, n)
) unpacked
UNION ALL
SELECT id, ts, node_id, virtual_key_id, provider, model, endpoint, stream, status, latency_ms, prompt_tokens,
       completion_tokens, cost, error_type, convert_to(request, 'UTF8'), convert_to(response, 'UTF8')
FROM request_logs;
