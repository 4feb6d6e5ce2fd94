-- rainbridge config store, version 3: the roster epochs of fleet-wide counters
-- (counters/epochs.py, counters/fleet_epochs.py). The store numbers them, so every member
-- agrees which member incarnations epoch N holds; fleet_gone remembers incarnations that
-- left a roster (drained, left, replaced by their restart, dead for good) so a member that
-- has not heard of it yet cannot put one back.
CREATE TABLE fleet_epochs (
    epoch BIGINT PRIMARY KEY,
    members TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE fleet_gone (
    member TEXT PRIMARY KEY,
    gone_ms BIGINT NOT NULL
);
