-- rainbridge logs store, version 2: fewer b-trees for the writer to insert into.
-- Version 1 had three indexes per row (the primary key on id, (ts, id) and
-- (virtual_key_id, ts)). Now two, one for a request without a virtual key: the primary key
-- on (ts, id) both orders /api/logs (newest first, the cursor) and keeps a retried batch
-- from being written twice (ids are unique by construction); the virtual key index holds
-- only the rows that have one (a filter `virtual_key_id = $1` implies it), ordered as
-- /api/logs lists them (version 1 sorted a key's rows by id for each page).
ALTER TABLE request_logs DROP CONSTRAINT request_logs_pkey;
DROP INDEX request_logs_ts;
ALTER TABLE request_logs ADD CONSTRAINT request_logs_pkey PRIMARY KEY (ts, id);
DROP INDEX request_logs_vk;
CREATE INDEX request_logs_vk ON request_logs (virtual_key_id, ts, id) WHERE virtual_key_id IS NOT NULL;
