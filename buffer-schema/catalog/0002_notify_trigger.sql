-- Tells running gateways that the catalog changed, so they refresh within a
-- second instead of waiting for their poll (database.refresh_interval).
-- The channel name must match the gateways' database.notify_channel.

CREATE OR REPLACE FUNCTION iot_data.notify_mqtt_catalog_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mqtt_catalog_changed', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS mqtt_broker_changed ON iot_data.mqtt_broker;
CREATE TRIGGER mqtt_broker_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON iot_data.mqtt_broker
    FOR EACH STATEMENT EXECUTE FUNCTION iot_data.notify_mqtt_catalog_changed();

DROP TRIGGER IF EXISTS mqtt_topic_changed ON iot_data.mqtt_topic;
CREATE TRIGGER mqtt_topic_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON iot_data.mqtt_topic
    FOR EACH STATEMENT EXECUTE FUNCTION iot_data.notify_mqtt_catalog_changed();
