-- Where gateways report their sessions: one row per gateway and broker, written
-- by the gateway (INSERT ... ON CONFLICT UPDATE) when a session's state changes
-- and at least every status.report_interval (60s). A row whose updated_at is
-- old belongs to a gateway that is down or cannot reach the database.
-- The gateway's database user needs SELECT, INSERT, UPDATE, DELETE on it.
-- psql -f buffer-schema/catalog/0004_connection_status.sql

CREATE TABLE IF NOT EXISTS iot_data.mqtt_connection_status (
    gateway_id        text        NOT NULL,
    mqtt_id           integer     NOT NULL,
    connected         boolean     NOT NULL,
    -- 'host:port' connected to (or being tried), its place in the list (1: primary).
    endpoint          text,
    endpoint_index    integer,
    endpoint_count    integer,
    -- When connected last changed.
    since             timestamptz NOT NULL,
    last_error        text,
    messages_received bigint      NOT NULL DEFAULT 0,
    last_message_at   timestamptz,
    subscribed_topics integer     NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, mqtt_id)
);
