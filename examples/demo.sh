#!/usr/bin/env bash
# The gateway end to end on one machine: a PostgreSQL catalog with two brokers,
# two Mosquitto brokers, the gateway, and the kinesis-local emulator as Kinesis.
# Publishes messages to both brokers and prints what arrives in the stream.
#   bash examples/demo.sh            (N messages per broker: N=200 bash examples/demo.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100}

bash .ci/setup
echo "== building the gateway"
cargo build --locked --quiet
bin=target/debug/mqtt-kinesis-bridge

work=$(mktemp -d /tmp/mkb-demo.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

echo "== starting the Kinesis emulator and a second Mosquitto"
kinesis_port=$(free_port)
(cd "${KINESIS_LOCAL_DIR:-/opt/kinesis-emu}/node_modules/kinesis-local" &&
    KINESIS_MOCK_PLAIN_PORT=$kinesis_port KINESIS_MOCK_TLS_PORT=$(free_port) \
    INITIALIZE_STREAMS=telemetry:1 exec node main.js >"$work/kinesis.log" 2>&1) &
pids+=($!)
broker2_port=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$broker2_port" >"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
wait_port "$kinesis_port"
wait_port "$broker2_port"

echo "== catalog: database mkb_demo with brokers 1 (127.0.0.1:1883) and 2 (127.0.0.1:$broker2_port)"
psql_() { PGOPTIONS='-c client_min_messages=warning' psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -q "$@"; }
psql_ -d postgres -c 'DROP DATABASE IF EXISTS mkb_demo WITH (FORCE)' -c 'CREATE DATABASE mkb_demo'
for sql in buffer-schema/catalog/*.sql; do psql_ -d mkb_demo -f "$sql"; done
psql_ -d mkb_demo <<SQL
INSERT INTO iot_data.mqtt_broker (mqtt_id, mqtt_host, mqtt_port, status) VALUES
    (1, '127.0.0.1', 1883, TRUE),
    (2, '127.0.0.1', $broker2_port, TRUE),
    (3, '127.0.0.1', 1, FALSE);   -- inactive: never connected
INSERT INTO iot_data.mqtt_topic (mqtt_id, topic, qos, status) VALUES
    (NULL, 'demo/#', 1, TRUE);
SQL

cat >"$work/gateway.toml" <<TOML
gateway_id = "demo-gateway"
[spool]
path = "$work/spool.db"
max_bytes = "64MiB"
[kinesis]
stream = "telemetry"
region = "us-east-1"
endpoint = "http://127.0.0.1:$kinesis_port"
[database]
url = "postgres://postgres@127.0.0.1:5432/mkb_demo"
TOML

echo "== check: everything the config points at"
AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret "$bin" check --config "$work/gateway.toml"

echo "== running the gateway (log: $work/gateway.log)"
AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret \
    "$bin" run --config "$work/gateway.toml" 2>"$work/gateway.log" &
gateway=$!
pids+=($gateway)
for _ in $(seq 1 100); do
    [ "$(grep -c 'connected' "$work/gateway.log" || true)" -ge 2 ] && break
    sleep 0.1
done

echo "== publishing $N messages to each broker"
for i in $(seq 1 "$N"); do
    echo "{\"seq\": $i, \"temp\": 21.5}"
done | mosquitto_pub -h 127.0.0.1 -p 1883 -t demo/broker1 -q 1 -l
for i in $(seq 1 "$N"); do
    echo "reading $i from broker 2"
done | mosquitto_pub -h 127.0.0.1 -p "$broker2_port" -t demo/broker2 -q 1 -l

echo "== reading the stream back from the emulator"
python3 examples/read_stream.py "http://127.0.0.1:$kinesis_port" telemetry $((2 * N))

echo "== status, from the gateway and from the catalog database"
for _ in $(seq 1 50); do
    "$bin" status --config "$work/gateway.toml" | grep -q ' connected ' && break
    sleep 0.2
done
"$bin" status --config "$work/gateway.toml"
for _ in $(seq 1 50); do
    rows=$(psql_ -d mkb_demo -tA -c "SELECT count(*) FROM iot_data.mqtt_connection_status WHERE connected")
    [ "$rows" -ge 2 ] && break
    sleep 0.2
done
psql_ -d mkb_demo -c "SELECT gateway_id, mqtt_id, connected, endpoint, messages_received, subscribed_topics FROM iot_data.mqtt_connection_status ORDER BY mqtt_id"

echo "== stopping the gateway (SIGTERM)"
kill -TERM "$gateway"
wait "$gateway" && echo "gateway exited cleanly"
echo "== gateway log"
cat "$work/gateway.log"
rm -rf "$work"
