-- Spool schema version 4: the device a record came from (issue 16), taken
-- from its topic on receipt by the topic row's device_id_level, so the
-- envelope says what the catalog said then. NULL: no device id.

ALTER TABLE records ADD COLUMN device_id TEXT;
ALTER TABLE dead_letters ADD COLUMN device_id TEXT;
