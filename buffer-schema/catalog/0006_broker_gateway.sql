-- Optional: which gateways run which broker. A broker with no row here runs on
-- every gateway (as before this table existed); a broker with rows runs only
-- on the gateways they name (the gateway's config key gateway_id). Gateways
-- read it when it exists and keep working without it.
-- Moving a broker is one UPDATE: the trigger tells the gateways, the old one
-- disconnects cleanly and the new one connects within a second.
-- Two gateways sharing one broker must use shared subscriptions
-- (mqtt_broker.use_shared_subscriptions), or Kinesis gets every message twice.
-- psql -f buffer-schema/catalog/0006_broker_gateway.sql

CREATE TABLE IF NOT EXISTS iot_data.mqtt_broker_gateway (
    mqtt_id    integer NOT NULL,
    gateway_id text    NOT NULL,
    PRIMARY KEY (mqtt_id, gateway_id)
);

DROP TRIGGER IF EXISTS mqtt_broker_gateway_changed ON iot_data.mqtt_broker_gateway;
CREATE TRIGGER mqtt_broker_gateway_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON iot_data.mqtt_broker_gateway
    FOR EACH STATEMENT EXECUTE FUNCTION iot_data.notify_mqtt_catalog_changed();
