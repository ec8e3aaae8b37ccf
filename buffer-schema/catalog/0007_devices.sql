-- Optional: devices (issue 16). A topic row may say which level of the topic
-- names the device (device_id_level, 1 = the first level, NULL: none); the
-- gateways then put "device_id" in each JSON record, can key Kinesis by it
-- (mqtt.partition_key = "device" or "broker_device") and report per device
-- when it was last seen. Gateways read the column when it exists and keep
-- working without it; they write mqtt_device_seen when it exists and warn once
-- (retrying at status.report_interval) when it does not.
-- The gateway's database user needs SELECT, INSERT, UPDATE on mqtt_device_seen.
-- psql -f buffer-schema/catalog/0007_devices.sql

ALTER TABLE iot_data.mqtt_topic
    ADD COLUMN IF NOT EXISTS device_id_level smallint;

DO $$
BEGIN
    ALTER TABLE iot_data.mqtt_topic
        ADD CONSTRAINT mqtt_topic_device_id_level_range
        CHECK (device_id_level BETWEEN 1 AND 32);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- One row per gateway, broker and device: written by the gateway every
-- status.report_interval for the devices heard since its last write
-- (messages is added to, last_seen_at only moves forward).
CREATE TABLE IF NOT EXISTS iot_data.mqtt_device_seen (
    gateway_id    text        NOT NULL,
    mqtt_id       integer     NOT NULL,
    device_id     text        NOT NULL,
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    messages      bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (gateway_id, mqtt_id, device_id)
);

-- "Devices not seen for an hour" looks at last_seen_at.
CREATE INDEX IF NOT EXISTS mqtt_device_seen_last_seen_at
    ON iot_data.mqtt_device_seen (last_seen_at);
