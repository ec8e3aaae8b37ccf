-- Optional per-broker connection options (all nullable; NULL means the default
-- named beside each column). Gateways read columns by name: a table without
-- some or all of them keeps working, so apply this when the fleet needs them.
-- psql -f buffer-schema/catalog/0003_broker_options.sql

ALTER TABLE iot_data.mqtt_broker
    -- Further endpoints after mqtt_host:mqtt_port, in priority order:
    -- 'host[:port], [v6addr]:port, ...' (no port: mqtt_port).
    ADD COLUMN IF NOT EXISTS mqtt_failover text,
    -- TLS: off unless TRUE. verify_cert NULL/TRUE checks the server certificate.
    ADD COLUMN IF NOT EXISTS use_tls boolean,
    ADD COLUMN IF NOT EXISTS verify_cert boolean,
    -- Each a file path on the gateway or PEM text. ca_cert NULL: the system roots.
    -- client_key may be sealed ('enc:v1:...', see `mqtt-kinesis-bridge encrypt-password`).
    ADD COLUMN IF NOT EXISTS ca_cert text,
    ADD COLUMN IF NOT EXISTS client_cert text,
    ADD COLUMN IF NOT EXISTS client_key text,
    -- NULL: '{gateway_id}-{mqtt_id}'. '{gateway_id}' in the value is replaced.
    ADD COLUMN IF NOT EXISTS client_id text,
    -- Seconds; NULL: mqtt.keep_alive from the gateway's config.
    ADD COLUMN IF NOT EXISTS keep_alive integer,
    -- NULL/FALSE: persistent session (the broker queues for us while we are away).
    ADD COLUMN IF NOT EXISTS clean_session boolean,
    -- QoS for this broker's topic rows whose qos is NULL; NULL: 1.
    ADD COLUMN IF NOT EXISTS qos smallint,
    -- Prepended to every topic filter of this broker, e.g. 'site-7/'.
    ADD COLUMN IF NOT EXISTS topic_prefix text,
    -- TRUE: subscribe as '$share/{shared_group}/{filter}', so gateways split the traffic.
    ADD COLUMN IF NOT EXISTS use_shared_subscriptions boolean,
    ADD COLUMN IF NOT EXISTS shared_group text;
