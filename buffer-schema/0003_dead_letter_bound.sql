-- Spool schema version 3: dead letters are bounded (spool.dead_letter_max_bytes),
-- so a stream of records Kinesis never takes cannot fill the disk.

-- Bytes each dead letter counts against the bound, as records count them.
ALTER TABLE dead_letters ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
UPDATE dead_letters
   SET size = length(CAST(payload AS BLOB)) + length(CAST(topic AS BLOB))
            + length(CAST(partition_key AS BLOB)) + 64;

-- Dead letters deleted, oldest first, to keep within the bound.
ALTER TABLE broker_counters ADD COLUMN dead_evicted INTEGER NOT NULL DEFAULT 0;
