-- The gateway's clock against AWS's, per gateway: AWS's clock minus the
-- gateway's in milliseconds, as learned from the Date of Kinesis's answers
-- (0 while it agrees within 2 s or nothing was learned yet). The drain signs
-- with the corrected time; a large value means the gateway needs NTP (its
-- received_at timestamps are off by that much). Gateways write it when the
-- column exists and keep working without it.
-- psql -f buffer-schema/catalog/0005_clock_offset.sql

ALTER TABLE iot_data.mqtt_connection_status
    ADD COLUMN IF NOT EXISTS clock_offset_ms bigint;
