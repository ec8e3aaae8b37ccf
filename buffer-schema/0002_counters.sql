-- Spool schema version 2: counters that survive restarts, and the spool's identity.

-- Totals per broker since the spool was created. Updated in the same
-- transaction as the change they count, so they never disagree with the data.
CREATE TABLE broker_counters (
    broker_id     INTEGER PRIMARY KEY,
    spooled       INTEGER NOT NULL DEFAULT 0,  -- committed to the spool
    delivered     INTEGER NOT NULL DEFAULT 0,  -- accepted by Kinesis and deleted
    retried       INTEGER NOT NULL DEFAULT 0,  -- per-record retries after a failed put
    dropped       INTEGER NOT NULL DEFAULT 0,  -- deleted by the drop_oldest policy
    dead_lettered INTEGER NOT NULL DEFAULT 0   -- moved to dead_letters
);

-- Key/value facts about this spool file. `uid`: random, made once, part of every record id.
CREATE TABLE spool_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
