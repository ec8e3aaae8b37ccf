-- The central catalog the gateways read (PostgreSQL / TimescaleDB), as the
-- fleet has it. The gateway only SELECTs these tables, reading columns by
-- name, so extra columns (added by later releases) do not disturb it.
-- Apply once per database: psql -f buffer-schema/catalog/0001_iot_data.sql

CREATE SCHEMA IF NOT EXISTS iot_data;

-- One row per MQTT broker. Only rows with status = TRUE are connected.
CREATE TABLE IF NOT EXISTS iot_data.mqtt_broker (
    mqtt_id       integer PRIMARY KEY,
    mqtt_host     text,
    mqtt_port     integer DEFAULT 1883,
    mqtt_username text,
    mqtt_password text,
    status        boolean NOT NULL DEFAULT TRUE
);

-- Topic filters to subscribe to. mqtt_id NULL means "on every broker".
-- Only rows with status = TRUE count.
CREATE TABLE IF NOT EXISTS iot_data.mqtt_topic (
    topic_id serial PRIMARY KEY,
    mqtt_id  integer,
    topic    text NOT NULL,
    qos      smallint NOT NULL DEFAULT 1,
    status   boolean NOT NULL DEFAULT TRUE
);
