#!/usr/bin/env bash
# Builds the cargo-fuzz targets and runs each for a while:
#
#   bash fuzz/run.sh [SECONDS]        each target SECONDS (default 10), from fuzz/corpus/
#   FUZZ_RUNS=1000000 bash fuzz/run.sh  each target for that many executions instead
#   bash fuzz/run.sh merge            minimizes what runs found (fuzz/work/) into fuzz/corpus/
#                                     (a set cover of the edges, at most 100 KB a target)
#   FUZZ_TARGETS="config put_records" bash fuzz/run.sh ...   only those targets
#
# Installs cargo-fuzz (crates.io) when missing. libFuzzer needs nightly
# features: RUSTC_BOOTSTRAP=1 lets the stable toolchain build them. No
# sanitizer (the targets are safe Rust; SQLite's C is not instrumented by
# cargo-fuzz anyway), with debug assertions so an overflow panics.
# New inputs go to fuzz/work/TARGET (not kept), failures to
# fuzz/artifacts/TARGET/; keep a failure under fuzz/regressions/TARGET/ once
# fixed: the normal test suite replays it (tests/it/fuzz_replay.rs).
set -euo pipefail
cd "$(dirname "$0")"

targets=${FUZZ_TARGETS:-"config catalog_rows topic_filter snapshot_restore snapshot_file put_records record_format sealed_open"}
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build --sanitizer none --debug-assertions
bin=target/x86_64-unknown-linux-gnu/release
[ -d "$bin" ] || bin=target/$(rustc -vV | sed -n 's/^host: //p')/release

if [ "${1:-}" = merge ]; then
    for target in $targets; do
        mkdir -p "work/$target"
        merged=$(mktemp -d)
        "$bin/$target" -set_cover_merge=1 -use_counters=0 -use_cmp=0 "$merged" "corpus/$target" "work/$target" 2>&1 | tail -1
        # Kept in git: at most 100 KB a target, the largest inputs dropped first.
        while [ "$(du -s --apparent-size -b "$merged" | cut -f1)" -gt 100000 ]; do
            rm "$merged/$(ls -S "$merged" | head -1)"
        done
        rm -rf "corpus/$target" && mv "$merged" "corpus/$target"
    done
    du -sh corpus
    exit 0
fi

limit="-max_total_time=${1:-10}"
[ -n "${FUZZ_RUNS:-}" ] && limit="-runs=$FUZZ_RUNS"
failed=()
for target in $targets; do
    mkdir -p "work/$target" "artifacts/$target"
    echo "== $target ($limit)"
    if "$bin/$target" "work/$target" "corpus/$target" "$limit" -max_len=8192 -len_control=0 \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/" 2>"artifacts/$target.log"; then
        grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "artifacts/$target.log" | tr '\n' ' '
        echo
    else
        failed+=("$target")
        grep -A8 -E 'panicked|ERROR: libFuzzer' "artifacts/$target.log" | head -20
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets that failed: ${failed[*]} (inputs under fuzz/artifacts/)"
    exit 1
fi
