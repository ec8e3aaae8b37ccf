#!/usr/bin/env bash
# Interleaved A/B rounds of benches/e2e.sh: how a change is judged on a shared
# machine whose CPU figures move by 10-15 % from one run to the next. One run
# of each side per round, the side that goes first alternating, so a slow
# spell of the machine falls on both.
#
#   bash benches/ab.sh ROUNDS A-SETTINGS... -- B-SETTINGS...
#
# Each side's settings are VAR=value words added to benches/e2e.sh's
# environment for that side's runs; the rest of the environment applies to
# both. For example, aggregation on against off at the backlog point:
#
#   E2E_POINTS=backlog E2E_BACKLOG=25000 E2E_COUNTER=none bash benches/ab.sh 8 \
#       'MKB_EXTRA_KINESIS=aggregation = "kpl"' -- 'MKB_EXTRA_KINESIS='
#
# or two binaries: bash benches/ab.sh 6 MKB_BIN=/tmp/old -- MKB_BIN=/tmp/new
#
# Prints every run's line (prefixed with its side and round) as it ends, then
# per point and side: CPU per message (mean, median, lowest and highest) and
# the mean rate, and in how many rounds A used less CPU than B. The bench's
# progress goes to stderr. E2E_COUNTER=none is the usual choice: a tracer
# adds its own cost to the CPU figures.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: bash benches/ab.sh ROUNDS A-SETTINGS... -- B-SETTINGS..." >&2
    exit 2
}
[ $# -ge 2 ] || usage
rounds=$1
shift
[[ $rounds =~ ^[1-9][0-9]*$ ]] || usage
a=() b=() side=a
for word in "$@"; do
    if [ "$word" = -- ] && [ $side = a ]; then
        side=b
    elif [ $side = a ]; then
        a+=("$word")
    else
        b+=("$word")
    fi
done
[ $side = b ] || usage
for word in "${a[@]}" "${b[@]}"; do
    [[ $word =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || {
        echo "ab: '$word' is not VAR=value" >&2
        exit 2
    }
done

results=$(mktemp)
trap 'rm -f "$results"' EXIT

# run SIDE ROUND: one run of benches/e2e.sh with that side's settings; a
# failed run stops the comparison (a summary without it would mislead).
run() {
    local side=$1 round=$2 line out
    local -n settings=$1
    out=$(env "${settings[@]}" bash benches/e2e.sh) || {
        echo "ab: side $side, round $round: benches/e2e.sh failed" >&2
        exit 1
    }
    while IFS= read -r line; do
        echo "$side round $round: $line"
        # "<point> ... | <rate> msg/s  cpu=<cpu> us/msg ..." (idle has no rate)
        if [[ $line =~ ^([a-z]+)\ .*\|\ +([0-9]+)\ msg/s\ +cpu=([0-9.]+)\ us/msg ]]; then
            echo "${BASH_REMATCH[1]} $side $round ${BASH_REMATCH[3]} ${BASH_REMATCH[2]}" >>"$results"
        fi
    done < <(grep -v '^#' <<<"$out")
}

for round in $(seq 1 "$rounds"); do
    if ((round % 2)); then
        run a "$round"
        run b "$round"
    else
        run b "$round"
        run a "$round"
    fi
done

echo "# point side runs: CPU us/msg mean median [min-max]; msg/s mean"
for point in $(cut -d' ' -f1 "$results" | sort -u); do
    for side in a b; do
        awk -v p="$point" -v s="$side" '$1 == p && $2 == s { print $4, $5 }' "$results" |
            sort -n |
            awk -v p="$point" -v s="$side" '
                { cpu[NR] = $1; sum += $1; rate += $2 }
                END {
                    if (NR == 0) exit
                    median = NR % 2 ? cpu[(NR + 1) / 2] : (cpu[NR / 2] + cpu[NR / 2 + 1]) / 2
                    printf "%-8s %s %2d runs: %.2f %.2f [%.1f-%.1f]; %.0f\n",
                        p, s, NR, sum / NR, median, cpu[1], cpu[NR], rate / NR
                }'
    done
    awk -v p="$point" '
        $1 == p { cpu[$2 "," $3] = $4; seen[$3] = 1 }
        END {
            for (r in seen) if (("a," r) in cpu && ("b," r) in cpu) {
                n++
                if (cpu["a," r] < cpu["b," r]) less++
            }
            printf "%-8s a used less CPU than b in %d of %d rounds\n", p, less, n
        }' "$results"
done
