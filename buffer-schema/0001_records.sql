-- Spool schema version 1: the queue of records waiting for Kinesis, and the
-- records Kinesis refused for good. Applied by src/spool/migrate.rs; never edit
-- a released file, add the next number instead.

-- One row per MQTT message accepted from a broker, oldest first by id.
-- AUTOINCREMENT: ids are never reused, so `spool uid + id` is a stable record id.
CREATE TABLE records (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    broker_id      INTEGER NOT NULL,
    topic          TEXT    NOT NULL,
    payload        BLOB    NOT NULL,
    partition_key  TEXT    NOT NULL,
    qos            INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,  -- UTC, milliseconds since the Unix epoch
    attempts       INTEGER NOT NULL DEFAULT 0,  -- PutRecords attempts so far
    size           INTEGER NOT NULL   -- bytes counted against spool.max_bytes
);

-- Records that can never be delivered (too large, rejected as invalid), with why.
CREATE TABLE dead_letters (
    id             INTEGER PRIMARY KEY,  -- the id it had in records
    broker_id      INTEGER NOT NULL,
    topic          TEXT    NOT NULL,
    payload        BLOB    NOT NULL,
    partition_key  TEXT    NOT NULL,
    qos            INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    attempts       INTEGER NOT NULL,
    error          TEXT    NOT NULL,
    dead_at_ms     INTEGER NOT NULL
);
