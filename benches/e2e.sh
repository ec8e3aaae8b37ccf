#!/usr/bin/env bash
# The gateway end to end, at three operating points, on this machine:
#   backlog  M brokers x N QoS 1 messages queued before the gateway starts,
#            and the mosquitto_sub ceiling on the same brokers in the same run;
#   live     M brokers x R msg/s for D seconds, for each rate R;
#   idle     many brokers, no traffic.
# Real PostgreSQL catalog, real Mosquitto brokers, the real gateway binary;
# Kinesis is benches/e2e/kinesis_sink.rs, which accepts every record and
# times each one from the publisher's send stamp.
#
#   bash benches/e2e.sh                  about 4 minutes after the build
#   E2E_QUICK=1 bash benches/e2e.sh      tiny sizes, about a minute: to test the bench
#
# Prints a header and one line per point on stdout; progress goes to stderr.
# Per point: msg/s, the gateway's CPU (utime+stime) per message, peak RSS
# (VmHWM), fsync+fdatasync and thread creations (clone, clone3) per second of
# the whole gateway process, PutRecords requests per second, latency
# publish -> Kinesis.
#
# Sizes, from the environment (defaults in parentheses; E2E_QUICK=1 shrinks them):
#   E2E_BROKERS (4)  E2E_BACKLOG (100000 per broker)  E2E_SIZE (200 bytes)
#   E2E_RATES ("100 250" msg/s per broker)  E2E_LIVE_SECONDS (60)
#   E2E_IDLE_BROKERS (100)  E2E_IDLE_MOSQUITTOS (4)  E2E_IDLE_SECONDS (10)
#   E2E_POINTS ("backlog live idle")
#   E2E_DEVICE_LEVEL  the bench topic row's device_id_level (unset: none); 2 makes
#       each broker's topic bench/bN one device bN, tracked for mqtt_device_seen
#   E2E_KEEP=1 keeps the work directory (logs, strace output) after a success too
#   E2E_COUNTER  how fsync and clone calls are counted (the header says which):
#       perf    perf stat on the syscall tracepoints: in-kernel counters that
#               do not disturb the gateway (needs linux-perf, mounts tracefs)
#       strace  strace --seccomp-bpf: untraced calls cost nothing, but each
#               traced one stops the calling thread; measured here, that adds
#               30-50% to the live CPU figures and 4x to the idle wake-ups
#       auto    (default) perf if it can count syscalls here, else strace
#       none    not counted (n/a): the figures without any tracer
# The gateway:
#   MKB_BIN=path  bench this binary instead of building this tree's release binary
#   MKB_EXTRA_SPOOL, MKB_EXTRA_KINESIS, MKB_EXTRA_MQTT  TOML lines appended to
#       that section of the gateway config, e.g. MKB_EXTRA_SPOOL='commit_interval = "20ms"'
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and Mosquitto
# (bash .ci/setup provides both); installs strace or linux-perf if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${E2E_QUICK:-0}" = 1 ]; then
    : "${E2E_BROKERS:=2}" "${E2E_BACKLOG:=2000}" "${E2E_RATES:=50}" "${E2E_LIVE_SECONDS:=5}"
    : "${E2E_IDLE_BROKERS:=10}" "${E2E_IDLE_MOSQUITTOS:=2}" "${E2E_IDLE_SECONDS:=2}"
fi
brokers=${E2E_BROKERS:-4}
backlog=${E2E_BACKLOG:-100000}
size=${E2E_SIZE:-200}
rates=${E2E_RATES:-100 250}
live_seconds=${E2E_LIVE_SECONDS:-60}
idle_brokers=${E2E_IDLE_BROKERS:-100}
idle_mosquittos=${E2E_IDLE_MOSQUITTOS:-4}
idle_seconds=${E2E_IDLE_SECONDS:-10}
points=${E2E_POINTS:-backlog live idle}
counter=${E2E_COUNTER:-auto}
database=mkb_bench
perf_interval_ms=100
perf_events=syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync,syscalls:sys_enter_clone,syscalls:sys_enter_clone3

progress() { printf '== %s\n' "$*" >&2; }

# ---- processes: everything started is tracked, and stopped at exit ----

tracked=()
work=""
track() { tracked+=("$1"); }
forget() {
    local pid kept=()
    for pid in "${tracked[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
    tracked=("${kept[@]}")
}
# True once PID is gone or a zombie (our children stay zombies until waited for).
exited() {
    local stat
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 0
    stat=${stat##*) }
    [ "${stat:0:1}" = Z ]
}
cleanup() {
    local status=$? idx pid
    # Newest first: a gateway goes before the strace that runs it.
    for ((idx = ${#tracked[@]} - 1; idx >= 0; idx--)); do
        kill -TERM "${tracked[idx]}" 2>/dev/null || true
    done
    for pid in "${tracked[@]}"; do
        for _ in $(seq 1 50); do exited "$pid" && break; sleep 0.1; done
        exited "$pid" || kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ -n "$work" ]; then
        if [ "$status" = 0 ] && [ "${E2E_KEEP:-0}" != 1 ]; then
            rm -rf "$work"
        else
            echo "e2e: logs kept in $work" >&2
        fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sleeps without a child process (read times out on a pipe nobody writes to).
exec {nap_fd}<> <(:)
nap() { read -rt "$1" -u "$nap_fd" _ || true; }
now_us() { echo "${EPOCHREALTIME/./}"; }

gw_log="" sink_log=""
fail() {
    echo "e2e: FAILED: $*" >&2
    local log
    for log in "$gw_log" "$sink_log" "${work:+$work/publish.log}"; do
        if [ -n "$log" ] && [ -s "$log" ]; then
            echo "---- tail of $log" >&2
            tail -n 20 "$log" >&2
        fi
    done
    exit 1
}

# wait_until SECONDS WHAT COMMAND...: runs COMMAND every 0.1 s until it
# succeeds; after SECONDS, fails saying WHAT never happened.
wait_until() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$(($(now_us) + seconds * 1000000))
    until "$@"; do
        (($(now_us) < deadline)) || fail "$what: not within ${seconds}s"
        nap 0.1
    done
}

# stop PID SECONDS WHAT: SIGTERM, then waits for the exit; the exit status is returned.
stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait_until "$2" "$3 exits after SIGTERM" exited "$1"
    local status=0
    wait "$1" 2>/dev/null || status=$?
    forget "$1"
    return "$status"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---- /proc readers ----

clock_ticks=$(getconf CLK_TCK)
# utime + stime of the whole process (exited threads included), in clock ticks.
cpu_ticks() {
    local stat
    read -r stat <"/proc/$1/stat"
    stat=${stat##*) }
    # shellcheck disable=SC2086  # splitting into fields is the point
    set -- $stat
    echo $((${12} + ${13}))
}
# thread_ticks PID: "name ticks" per live thread of PID (utime + stime).
thread_ticks() {
    local file stat name
    for file in /proc/"$1"/task/*/stat; do
        read -r stat <"$file" 2>/dev/null || continue
        name=${stat#*(}; name=${name%%)*}
        stat=${stat##*) }
        # shellcheck disable=SC2086  # splitting into fields is the point
        set -- $stat
        echo "${name// /_} $((${12} + ${13}))"
    done
}
# report_thread_cpu BEFORE AFTER N_RECORDS: on stderr, CPU per message by thread name.
report_thread_cpu() {
    progress "$(awk -v hz="$clock_ticks" -v n="$3" '
        FNR == NR { before[$1] += $2; next }
        { after[$1] += $2 }
        END {
            line = "by thread (us/msg):"
            for (name in after) line = line sprintf(" %s=%.1f", name, (after[name] - before[name]) * 1e6 / hz / n)
            print line
        }' <(echo "$1") <(echo "$2"))"
}
# helpers_cpu_ticks: CPU ticks of the brokers and the stand-in together ("brokers sink").
helpers_cpu_ticks() {
    local pid broker_ticks=0
    for pid in "${broker_pids[@]}"; do broker_ticks=$((broker_ticks + $(cpu_ticks "$pid"))); done
    echo "$broker_ticks $(cpu_ticks "$sink_pid")"
}
# report_helpers_cpu BEFORE AFTER N_RECORDS: on stderr, what the bench's own
# processes spent per record in the window, since they share the cores.
report_helpers_cpu() {
    local brokers_before sink_before brokers_after sink_after
    read -r brokers_before sink_before <<<"$1"
    read -r brokers_after sink_after <<<"$2"
    progress "$(awk -v b="$((brokers_after - brokers_before))" -v s="$((sink_after - sink_before))" \
        -v hz="$clock_ticks" -v n="$3" 'BEGIN {
        printf "meanwhile: mosquitto %.1f us/msg, the Kinesis stand-in %.1f us/msg", b * 1e6 / hz / n, s * 1e6 / hz / n }')"
}
# status_kib PID FIELD: a kB field of /proc/PID/status (VmHWM, VmRSS).
status_kib() {
    local name value _
    while read -r name value _; do
        [ "$name" = "$2:" ] && { echo "$value"; return; }
    done <"/proc/$1/status"
    echo 0
}
# Voluntary context switches (wake-ups) of all the process's threads.
wakeups() {
    local file name value total=0
    for file in /proc/"$1"/task/*/status; do
        while read -r name value; do
            [ "$name" = voluntary_ctxt_switches: ] && total=$((total + value))
        done <"$file" 2>/dev/null || true
    done
    echo "$total"
}
# count_calls TRACE FROM_US TO_US: "fsyncs clones" the counter saw in the
# window ("-1 -1": not counted).
count_calls() {
    case $counter in
        strace) count_strace_calls "$@" ;;
        perf) count_perf_calls "$@" ;;
        *) echo -1 -1 ;;
    esac
}
count_strace_calls() {
    awk -v from="$2" -v to="$3" '
        BEGIN { from += 0; to += 0 }
        { t = $2; sub(/\./, "", t); t += 0 }
        t < from || t > to { next }
        $3 ~ /^f(data)?sync\(/ { fsyncs++ }
        $3 ~ /^clone3?\(/ { clones++ }
        END { print fsyncs + 0, clones + 0 }' "$1"
}
# perf prints a count per interval, stamped with the interval's end in seconds
# since perf started; intervals that overlap the window count (one interval of slack).
count_perf_calls() {
    awk -F , -v from="$2" -v to="$3" -v started="$gw_trace_started_us" -v interval="$perf_interval_ms" '
        BEGIN { from += 0; to += 0; started += 0; interval *= 1000 }
        /^#/ || NF < 4 { next }
        { t = started + $1 * 1e6 }
        t <= from || t - interval > to { next }
        $4 ~ /sys_enter_f(data)?sync$/ { fsyncs += $2 }
        $4 ~ /sys_enter_clone3?$/ { clones += $2 }
        END { print fsyncs + 0, clones + 0 }' "$1"
}

# ---- set-up: tools, binaries, catalog ----

need_tools() {
    if ! command -v psql >/dev/null || ! command -v mosquitto >/dev/null ||
        ! command -v mosquitto_sub >/dev/null || ! pg_isready -h 127.0.0.1 -p 5432 -q; then
        bash .ci/setup
    fi
    case $counter in
        auto) if perf_counts_syscalls; then counter=perf; else counter=strace; fi ;;
        perf)
            command -v perf >/dev/null || apt_install linux-perf
            perf_counts_syscalls || fail "perf cannot count syscall tracepoints here; try E2E_COUNTER=strace"
            ;;
        strace | none) ;;
        *) fail "E2E_COUNTER=$counter: expected auto, perf, strace or none" ;;
    esac
    if [ "$counter" = strace ]; then command -v strace >/dev/null || apt_install strace; fi
}

perf_counts_syscalls() {
    command -v perf >/dev/null || return 1
    # The syscall tracepoints live in tracefs.
    mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || return 1
    perf stat -e syscalls:sys_enter_fsync -o /dev/null -- true 2>/dev/null
}

apt_install() {
    progress "installing $1"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null; } ||
        fail "cannot install $1"
}

# executable_of NAME: the path cargo's JSON messages (stdin) give for target NAME.
executable_of() {
    grep "\"name\":\"$1\"" | grep -o '"executable":"[^"]*"' | tail -n 1 | cut -d '"' -f 4
}

build() {
    if [ -n "${MKB_BIN:-}" ]; then
        gw_bin=$MKB_BIN
    else
        progress "building the gateway (cargo build --release --locked)"
        gw_bin=$(cargo build --release --locked --message-format=json | executable_of mqtt-kinesis-bridge)
    fi
    [ -x "$gw_bin" ] || fail "no gateway binary at '$gw_bin'"
    progress "building benches/e2e_tools.rs"
    tools=$(cargo bench --no-run --locked --bench e2e_tools --message-format=json | executable_of e2e_tools)
    [ -x "$tools" ] || fail "cargo did not report the e2e_tools executable"
}

psql_() { PGOPTIONS='-c client_min_messages=warning' psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -q "$@"; }

create_catalog() {
    psql_ -d postgres -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" -c "CREATE DATABASE $database"
    local sql
    for sql in buffer-schema/catalog/*.sql; do psql_ -d "$database" -f "$sql"; done
    # mqtt_id NULL: on every broker.
    level=${E2E_DEVICE_LEVEL:-}
    psql_ -d "$database" -c "INSERT INTO iot_data.mqtt_topic (mqtt_id, topic, qos, status${level:+, device_id_level}) VALUES (NULL, 'bench/#', 1, TRUE${level:+, $level})"
}

# set_brokers PORT...: the catalog's brokers become ids 1..n on these ports, nothing else.
set_brokers() {
    local sql="" broker_id=0 port
    for port in "$@"; do
        broker_id=$((broker_id + 1))
        sql+="($broker_id, '127.0.0.1', $port, TRUE),"
    done
    psql_ -d "$database" -c "TRUNCATE iot_data.mqtt_broker" \
        -c "INSERT INTO iot_data.mqtt_broker (mqtt_id, mqtt_host, mqtt_port, status) VALUES ${sql%,}"
}

# ---- brokers, the Kinesis stand-in, publishers ----

# start_brokers N: N Mosquitto processes on free ports -> broker_ports, broker_pids.
start_brokers() {
    read -ra broker_ports <<<"$("$tools" free-ports --count "$1")"
    broker_pids=()
    local port
    for port in "${broker_ports[@]}"; do
        # Mosquitto's defaults, except the offline queue: its cap (1000
        # messages) would drop most of a backlog queued for the gateway.
        cat >"$work/mosquitto-$port.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_queued_bytes 0
CONF
        mosquitto -c "$work/mosquitto-$port.conf" >"$work/mosquitto-$port.log" 2>&1 &
        track $!
        broker_pids+=($!)
    done
    for port in "${broker_ports[@]}"; do
        wait_until 10 "mosquitto listening on port $port" port_open "$port"
    done
}

stop_brokers() {
    local pid
    for pid in "${broker_pids[@]}"; do stop "$pid" 20 mosquitto || true; done
}

# start_sink NAME: a fresh Kinesis stand-in -> sink_pid, sink_stats; its figures as sink_* variables.
start_sink() {
    sink_stats=$work/$1.sink-stats
    sink_log=$work/$1.sink.log
    "$tools" kinesis-sink --stats "$sink_stats" 2>"$sink_log" &
    sink_pid=$!
    track "$sink_pid"
    wait_until 10 "the Kinesis stand-in listening" test -s "$sink_stats"
    read_sink
}

# The stand-in's figures, as its stats file names them (read_sink sets them).
sink_port="" sink_requests=0 sink_records=0 sink_bad_requests=0
sink_p50_us=0 sink_p99_us=0 sink_max_us=0 sink_slowest_at_us=0 sink_last_record_us=0
# shellcheck disable=SC1090  # the stand-in's own shell assignments
read_sink() { . "$sink_stats"; }

# sink_has N_RECORDS: the stand-in received them all (failing at once if the gateway died).
sink_has() {
    read_sink
    ((sink_bad_requests == 0)) || fail "the stand-in refused $sink_bad_requests requests (see $sink_log)"
    exited "$gw_job" && fail "the gateway exited with $sink_records of $1 records delivered"
    ((sink_records >= $1))
}

# publish_all COUNT [RATE]: a publisher per broker, in parallel, until every PUBACK arrived.
publish_all() {
    local count=$1 rate=${2:-} broker_idx pid publisher_pids=() seconds
    for broker_idx in "${!broker_ports[@]}"; do
        "$tools" publish --port "${broker_ports[broker_idx]}" --topic "bench/b$((broker_idx + 1))" \
            --count "$count" --size "$size" ${rate:+--rate "$rate"} >>"$work/publish.log" 2>&1 &
        track $!
        publisher_pids+=($!)
    done
    if [ -n "$rate" ]; then seconds=$((count / rate + 30)); else seconds=$((60 + count / 1000)); fi
    for pid in "${publisher_pids[@]}"; do
        wait_until "$seconds" "publisher $pid done" exited "$pid"
        wait "$pid" || fail "a publisher failed (see $work/publish.log)"
        forget "$pid"
    done
}

# ---- the gateway ----

# gateway_config NAME GATEWAY_ID: a config for this point, its spool in its own directory.
gateway_config() {
    mkdir -p "$work/$1"
    gw_config=$work/$1/gateway.toml
    cat >"$gw_config" <<TOML
gateway_id = "$2"
[spool]
path = "$work/$1/spool.db"
max_bytes = "2GiB"
${MKB_EXTRA_SPOOL:-}
[kinesis]
stream = "bench"
region = "us-east-1"
endpoint = "http://127.0.0.1:$sink_port"
${MKB_EXTRA_KINESIS:-}
[database]
url = "postgres://postgres@127.0.0.1:5432/$database"
[mqtt]
${MKB_EXTRA_MQTT:-}
[log]
level = "${E2E_LOG_LEVEL:-info}"
TOML
}

# start_gateway RUN: the gateway with gw_config, under the syscall counter ->
# gw_pid, gw_job (the counter, or the launching shell), gw_log, gw_trace.
start_gateway() {
    gw_log=$work/$1.gateway.log
    gw_trace=$work/$1.$counter
    gw_files=$work/$1.gateway
    local tracer=()
    # shellcheck disable=SC2054  # the commas belong to the tools' arguments
    case $counter in
        strace) tracer=(strace --seccomp-bpf -f -qq -ttt -e trace=fsync,fdatasync,clone,clone3 -o "$gw_trace") ;;
        perf) tracer=(perf stat -x , -I "$perf_interval_ms" -o "$gw_trace" -e "$perf_events" --) ;;
    esac
    # The shell runs the gateway as its child, to hand the bench its pid and
    # its exit status (perf stat exits 0 whatever the gateway did).
    # shellcheck disable=SC2016  # $0, $@ and $! belong to that shell
    local launcher='"$@" & echo $! >"$0.pid"; wait $!; echo $? >"$0.status"'
    gw_trace_started_us=$(now_us)
    env -u RUST_LOG -u AWS_SESSION_TOKEN -u AWS_PROFILE \
        AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret \
        "${tracer[@]}" sh -c "$launcher" "$gw_files" "$gw_bin" run --config "$gw_config" 2>"$gw_log" &
    gw_job=$!
    track "$gw_job"
    wait_until 10 "the gateway process started" test -s "$gw_files.pid"
    read -r gw_pid <"$gw_files.pid"
    track "$gw_pid"
}

# gateway_subscribed N: N sessions logged their subscription (failing at once if the gateway died).
gateway_subscribed() {
    exited "$gw_job" && fail "the gateway exited while starting"
    local n_subscribed
    n_subscribed=$(grep -c 'connected, subscribed to' "$gw_log" || true)
    ((n_subscribed >= $1))
}

stop_gateway() {
    forget "$gw_pid"
    kill -TERM "$gw_pid" 2>/dev/null || true
    wait_until 30 "the gateway exits after SIGTERM" exited "$gw_job"
    wait "$gw_job" || true
    forget "$gw_job"
    local status=unknown
    [ -s "$gw_files.status" ] && read -r status <"$gw_files.status"
    [ "$status" = 0 ] || fail "the gateway exited with status $status"
}

# ---- the operating points ----

# For the result lines: per_s(N, SECONDS, FORMAT) is "n/a" for a count not taken (-1).
awk_helpers='function per_s(n, s, format) { return n < 0 ? "n/a" : sprintf(format "/s", n / s) }'

point_backlog() {
    local n_records=$((brokers * backlog))
    progress "backlog: $brokers brokers, the gateway subscribes once (persistent sessions)"
    start_brokers "$brokers"
    set_brokers "${broker_ports[@]}"
    start_sink backlog
    gateway_config backlog bench-backlog
    start_gateway backlog-subscribe
    wait_until 60 "the gateway subscribed on $brokers brokers" gateway_subscribed "$brokers"
    stop_gateway

    progress "backlog: publishing $brokers x $backlog messages while the gateway is away"
    publish_all "$backlog"
    progress "backlog: the gateway drains $n_records queued messages"
    local started_us cpu hwm_kib n_fsyncs n_clones helpers_before
    helpers_before=$(helpers_cpu_ticks)
    started_us=$(now_us)
    start_gateway backlog
    wait_until $((60 + n_records / 2000)) "the stand-in received $n_records records" sink_has "$n_records"
    cpu=$(cpu_ticks "$gw_pid")
    # Every thread's ticks since the start (the start-up itself is noise here).
    report_thread_cpu "" "$(thread_ticks "$gw_pid")" "$n_records"
    hwm_kib=$(status_kib "$gw_pid" VmHWM)
    [ -n "${E2E_SMAPS:-}" ] && { cp "/proc/$gw_pid/smaps" "$E2E_SMAPS"; for t in /proc/"$gw_pid"/task/*; do echo "$(cat "$t/comm") $(cat "$t/syscall")"; done >"$E2E_SMAPS.tasks"; } || true
    report_helpers_cpu "$helpers_before" "$(helpers_cpu_ticks)" "$n_records"
    stop_gateway
    read -r n_fsyncs n_clones <<<"$(count_calls "$gw_trace" "$started_us" "$sink_last_record_us")"

    progress "backlog: the ceiling, mosquitto_sub on the same brokers"
    local broker_idx sub_pids=() pid ceiling_started_us ceiling_us
    for broker_idx in "${!broker_ports[@]}"; do
        timeout 10 mosquitto_sub -h 127.0.0.1 -p "${broker_ports[broker_idx]}" -c -q 1 \
            -i "e2e-ceiling-$((broker_idx + 1))" -t 'bench/#' -E ||
            fail "mosquitto_sub could not subscribe on port ${broker_ports[broker_idx]}"
    done
    publish_all "$backlog"
    ceiling_started_us=$(now_us)
    for broker_idx in "${!broker_ports[@]}"; do
        mosquitto_sub -h 127.0.0.1 -p "${broker_ports[broker_idx]}" -c -q 1 \
            -i "e2e-ceiling-$((broker_idx + 1))" -t 'bench/#' -C "$backlog" >/dev/null &
        track $!
        sub_pids+=($!)
    done
    for pid in "${sub_pids[@]}"; do
        wait_until $((60 + backlog / 1000)) "mosquitto_sub received $backlog messages" exited "$pid"
        wait "$pid" || fail "mosquitto_sub failed"
        forget "$pid"
    done
    ceiling_us=$(($(now_us) - ceiling_started_us))
    stop "$sink_pid" 10 "the stand-in" || true
    stop_brokers

    awk -v brokers="$brokers" -v n="$backlog" -v size="$size" -v records="$n_records" \
        -v us="$((sink_last_record_us - started_us))" -v ticks="$cpu" -v hz="$clock_ticks" \
        -v hwm="$hwm_kib" -v fsyncs="$n_fsyncs" -v clones="$n_clones" -v requests="$sink_requests" \
        -v ceiling_us="$ceiling_us" "$awk_helpers"' BEGIN {
        s = us / 1e6; rate = records / s; ceiling = records / (ceiling_us / 1e6)
        printf "backlog  brokers=%d n=%d size=%d | %.0f msg/s  cpu=%.1f us/msg  peak_rss=%.1f MiB  fsync=%s  put_records=%.1f/s  threads=%s | mosquitto_sub ceiling=%.0f msg/s  gateway=%.0f%%\n",
            brokers, n, size, rate, ticks * 1e6 / hz / records, hwm / 1024, per_s(fsyncs, s, "%.1f"),
            requests / s, per_s(clones, s, "%.2f"), ceiling, 100 * rate / ceiling }'
}

# point_live RATE: brokers (already running) x RATE msg/s for live_seconds.
point_live() {
    local rate=$1 count=$(($1 * live_seconds)) n_records
    n_records=$((brokers * count))
    progress "live: $brokers brokers x $rate msg/s for ${live_seconds}s"
    start_sink "live-$rate"
    gateway_config "live-$rate" "bench-live-$rate"
    start_gateway "live-$rate"
    wait_until 60 "the gateway subscribed on $brokers brokers" gateway_subscribed "$brokers"
    local started_us cpu_before cpu_after hwm_kib n_fsyncs n_clones helpers_before threads_before
    helpers_before=$(helpers_cpu_ticks)
    started_us=$(now_us)
    cpu_before=$(cpu_ticks "$gw_pid")
    threads_before=$(thread_ticks "$gw_pid")
    publish_all "$count" "$rate"
    wait_until 30 "the stand-in received $n_records records" sink_has "$n_records"
    cpu_after=$(cpu_ticks "$gw_pid")
    report_thread_cpu "$threads_before" "$(thread_ticks "$gw_pid")" "$n_records"
    hwm_kib=$(status_kib "$gw_pid" VmHWM)
    report_helpers_cpu "$helpers_before" "$(helpers_cpu_ticks)" "$n_records"
    stop_gateway
    stop "$sink_pid" 10 "the stand-in" || true
    read -r n_fsyncs n_clones <<<"$(count_calls "$gw_trace" "$started_us" "$sink_last_record_us")"

    awk -v brokers="$brokers" -v rate="$rate" -v secs="$live_seconds" -v size="$size" \
        -v records="$n_records" -v us="$((sink_last_record_us - started_us))" \
        -v ticks="$((cpu_after - cpu_before))" -v hz="$clock_ticks" -v hwm="$hwm_kib" \
        -v fsyncs="$n_fsyncs" -v clones="$n_clones" -v requests="$sink_requests" \
        -v p50="$sink_p50_us" -v p99="$sink_p99_us" -v max="$sink_max_us" \
        -v slowest_at="$((sink_slowest_at_us - started_us))" "$awk_helpers"' BEGIN {
        s = us / 1e6
        printf "live     brokers=%d rate=%d/s/broker secs=%d size=%d | %.0f msg/s  cpu=%.1f us/msg  peak_rss=%.1f MiB  fsync=%s  put_records=%.1f/s  threads=%s | latency p50=%.1f ms  p99=%.1f ms  max=%.1f ms (at %.0fs)\n",
            brokers, rate, secs, size, records / s, ticks * 1e6 / hz / records, hwm / 1024,
            per_s(fsyncs, s, "%.1f"), requests / s, per_s(clones, s, "%.2f"), p50 / 1000, p99 / 1000, max / 1000,
            slowest_at / 1e6 }'
}

point_idle() {
    progress "idle: $idle_brokers brokers on $idle_mosquittos Mosquitto processes, no traffic"
    start_brokers "$idle_mosquittos"
    # Several catalog rows per Mosquitto: distinct ids, so distinct client ids.
    local broker_idx rows=()
    for ((broker_idx = 0; broker_idx < idle_brokers; broker_idx++)); do
        rows+=("${broker_ports[broker_idx % idle_mosquittos]}")
    done
    set_brokers "${rows[@]}"
    start_sink idle
    gateway_config idle bench-idle
    start_gateway idle
    wait_until $((60 + idle_brokers / 2)) "the gateway subscribed on $idle_brokers brokers" \
        gateway_subscribed "$idle_brokers"
    local started_us ended_us cpu_before cpu_after wakeups_before wakeups_after rss_kib n_fsyncs n_clones
    started_us=$(now_us)
    cpu_before=$(cpu_ticks "$gw_pid")
    wakeups_before=$(wakeups "$gw_pid")
    nap "$idle_seconds" # the measurement itself
    ended_us=$(now_us)
    cpu_after=$(cpu_ticks "$gw_pid")
    wakeups_after=$(wakeups "$gw_pid")
    rss_kib=$(status_kib "$gw_pid" VmRSS)
    stop_gateway
    read_sink
    stop "$sink_pid" 10 "the stand-in" || true
    stop_brokers
    read -r n_fsyncs n_clones <<<"$(count_calls "$gw_trace" "$started_us" "$ended_us")"

    awk -v brokers="$idle_brokers" -v mosquittos="$idle_mosquittos" -v secs="$idle_seconds" \
        -v us="$((ended_us - started_us))" -v ticks="$((cpu_after - cpu_before))" -v hz="$clock_ticks" \
        -v rss="$rss_kib" -v wakeups="$((wakeups_after - wakeups_before))" \
        -v fsyncs="$n_fsyncs" -v clones="$n_clones" -v requests="$sink_requests" "$awk_helpers"' BEGIN {
        s = us / 1e6
        printf "idle     brokers=%d mosquittos=%d secs=%d | rss=%.1f MiB  wakeups=%.1f/s  cpu=%.0f us/s  fsync=%s  put_records=%d  threads=%s\n",
            brokers, mosquittos, secs, rss / 1024, wakeups / s, ticks * 1e6 / hz / s,
            per_s(fsyncs, s, "%.1f"), requests, per_s(clones, s, "%.2f") }'
}

# ---- main ----

header() {
    local cpu_model commit binary_size
    cpu_model=$(grep -m 1 'model name' /proc/cpuinfo | cut -d : -f 2 | sed 's/^ *//')
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || commit+="-dirty"
    binary_size=$(stat -c %s "$gw_bin")
    echo "# mqtt-kinesis-bridge e2e bench, $(date -u '+%Y-%m-%d %H:%M') UTC"
    echo "# machine: $(nproc) cores, $cpu_model, Linux $(uname -r), $(mosquitto -h 2>&1 | head -n 1)"
    # Anything else busy on the cores moves every figure; say so up front.
    echo "# load average at start: $(cut -d ' ' -f 1-3 /proc/loadavg)"
    echo "# gateway: $gw_bin ($((binary_size / 1024)) KiB)${MKB_BIN:+ (MKB_BIN)}, tree at commit $commit"
    echo "# spools in $work: $(findmnt -n -o FSTYPE,SOURCE --target "$work" | tr -s ' ')"
    case $counter in
        strace) echo "# fsync and threads counted by strace: each counted call stops the gateway, so cpu and wakeups read high" ;;
        perf) echo "# fsync and threads counted by perf stat on syscall tracepoints" ;;
        none) echo "# fsync and threads not counted (E2E_COUNTER=none)" ;;
    esac
    local section
    for section in SPOOL KINESIS MQTT; do
        local extra_var=MKB_EXTRA_$section
        [ -z "${!extra_var:-}" ] || echo "# extra [${section,,}] config: ${!extra_var//$'\n'/; }"
    done
}

for point in $points; do
    case $point in
        backlog | live | idle) ;;
        *) fail "unknown point '$point' in E2E_POINTS (backlog, live, idle)" ;;
    esac
done
need_tools
build
# TMPDIR picks the disk the spools live on: fsync latency bounds the backlog rate.
work=$(mktemp -d "${TMPDIR:-/tmp}/mkb-e2e.XXXXXX")
progress "work directory: $work"
header
create_catalog
for point in $points; do
    case $point in
        backlog) point_backlog ;;
        live)
            start_brokers "$brokers"
            set_brokers "${broker_ports[@]}"
            for rate in $rates; do point_live "$rate"; done
            stop_brokers
            ;;
        idle) point_idle ;;
    esac
done
