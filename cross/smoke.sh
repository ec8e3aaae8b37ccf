#!/usr/bin/env bash
# Smoke test of one built binary, natively or under qemu-user:
#   bash cross/smoke.sh dist/mqtt-kinesis-bridge-aarch64-unknown-linux-gnu qemu-aarch64 -L /usr/aarch64-linux-gnu
# Checks --version, --help and `check --help`, sealing a password (ring's
# ChaCha20-Poly1305 on this CPU), that a bad config exits 2, that `check` reports
# the closed database and Kinesis ports and exits 1, and that `run` opens and
# migrates a new spool, stops cleanly on SIGTERM, and `status` reads it.
# Needs no services: the database and Kinesis addresses point at closed ports.
set -euo pipefail
binary=${1:?usage: cross/smoke.sh BINARY [RUNNER ARGS...]}
shift
run=("$@" "$binary")
work=$(mktemp -d)
gateway_pid=""
cleanup() {
    [ -n "$gateway_pid" ] && kill -KILL "$gateway_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "smoke: FAIL: $*" >&2; [ -f "$work/gateway.log" ] && cat "$work/gateway.log" >&2; exit 1; }
# Waits up to $1 seconds for the command in the remaining arguments to succeed.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

version=$("${run[@]}" --version) || fail "--version exited $?"
[[ $version == "mqtt-kinesis-bridge "* ]] || fail "--version printed: $version"
help=$("${run[@]}" --help) || fail "--help exited $?"
[[ $help == "usage: mqtt-kinesis-bridge run"* ]] || fail "--help printed: $help"
check_help=$("${run[@]}" check --help) || fail "check --help exited $?"
[[ $check_help == *"mqtt-kinesis-bridge check --config FILE"* ]] || fail "check --help printed: $check_help"
key=$("${run[@]}" new-key) || fail "new-key exited $?"
sealed=$(echo "smoke-password" | MKB_PASSWORD_KEY=$key "${run[@]}" encrypt-password --broker 7) ||
    fail "encrypt-password exited $?"
[[ $sealed == enc:v2:* && $sealed != *smoke-password* ]] || fail "encrypt-password printed: $sealed"

cat > "$work/gateway.toml" <<TOML
gateway_id = "smoke"
[spool]
path = "$work/spool/spool.db"
max_bytes = "16MiB"
[kinesis]
stream = "smoke"
region = "eu-west-1"
endpoint = "http://127.0.0.1:9"
[database]
url = "postgres://smoke@127.0.0.1:9/none"
TOML
sed 's/^max_bytes = .*/max_bytes = "lots"/' "$work/gateway.toml" > "$work/bad.toml"
set +e
"${run[@]}" run --config "$work/bad.toml" 2> "$work/bad.err"
code=$?
set -e
[ $code -eq 2 ] || fail "a bad spool.max_bytes exited $code, not 2"
grep -q "spool.max_bytes" "$work/bad.err" || fail "the config error does not name the key: $(cat "$work/bad.err")"

AWS_ACCESS_KEY_ID=AKIDSMOKE AWS_SECRET_ACCESS_KEY=smoke-secret \
    "${run[@]}" run --config "$work/gateway.toml" 2> "$work/gateway.log" &
gateway_pid=$!
# Slow under qemu: the first start creates and migrates the spool.
wait_for 120 grep -q "starting: gateway smoke, spool .*(0 records waiting)" "$work/gateway.log" ||
    fail "the gateway did not open its spool"
wait_for 60 grep -q "catalog" "$work/gateway.log" || fail "the catalog stage did not start"
kill -TERM "$gateway_pid"
set +e
wait "$gateway_pid"
code=$?
set -e
gateway_pid=""
[ $code -eq 0 ] || fail "SIGTERM: exit code $code, not 0"
grep -q "stopped" "$work/gateway.log" || fail "no clean stop in the log"
if grep -q "smoke-secret" "$work/gateway.log"; then fail "the secret key is in the log"; fi

set +e
check=$(AWS_ACCESS_KEY_ID=AKIDSMOKE AWS_SECRET_ACCESS_KEY=smoke-secret "${run[@]}" check --config "$work/gateway.toml" --json)
code=$?
set -e
[ $code -eq 1 ] || fail "check with nothing reachable exited $code, not 1: $check"
[[ $check == *'"kind":"unreachable"'* && $check == *'"area":"spool","detail":"writable'* ]] ||
    fail "check --json: $check"

status=$("${run[@]}" status --config "$work/gateway.toml" --json) || fail "status exited $?"
[[ $status == *'"records_waiting":0'* ]] || fail "status --json: $status"
echo "smoke: ok: $version (${*:-native})"
