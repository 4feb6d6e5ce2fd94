-- rainbridge config store, version 2: each counter row records when its window ends, so a
-- starting node loads only open windows and a periodic cleanup deletes the rows of windows
-- that ended (by window_end, in bounded batches). Rows written before this version keep 0
-- ("end unknown"): they are loaded and kept under the old rule, 400 days from their start.
ALTER TABLE counters ADD COLUMN window_end BIGINT NOT NULL DEFAULT 0;
CREATE INDEX counters_window_end ON counters (window_end);
