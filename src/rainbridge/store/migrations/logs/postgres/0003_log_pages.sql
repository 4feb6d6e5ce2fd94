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
