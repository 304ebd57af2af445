#!/usr/bin/env bash
# perf/workers_table.sh - worker mode against inline, in one command: htkv-perf --sweep for the
# put mix with 1, 4 and 16 caller threads, the async mix with 1 caller and the durable mix with
# 16, each on every CPU the process may use and confined to one CPU (taskset), workers 0
# (inline), 1, 2, 4 ... MAX_WORKERS. Prints one line per (mix, callers, CPUs) with ops/s per
# worker count and the ratio of the worst worker point to inline.
#
# Usage: perf/workers_table.sh [HTKV_PERF] [MAX_WORKERS] [SECONDS]
#   HTKV_PERF    the htkv-perf binary (default build-bench/htkv-perf: make bench builds it)
#   MAX_WORKERS  default 4 (on a 16-core machine: 16)
#   SECONDS      measured seconds per point (default 1)
set -euo pipefail
perf=${1:-build-bench/htkv-perf}
maxw=${2:-4}
secs=${3:-1}
one_cpu=$(taskset -pc $$ | sed 's/.*: *//; s/[,-].*//')
printf '%-15s %7s %-6s' mix callers cpus
w=0
while [ "$w" -le "$maxw" ]; do
    printf ' %10s' "w=$w"
    w=$([ "$w" -eq 0 ] && echo 1 || echo $((w * 2)))
done
printf ' %8s\n' min/w0
run() { # mix callers cpus(all|one)
    local pre=()
    [ "$3" = one ] && pre=(taskset -c "$one_cpu")
    "${pre[@]}" "$perf" --sweep --mix "$1" --threads "$2" --max-workers "$maxw" \
        --seconds "$secs" 2>/dev/null |
        awk -v mix="$1" -v c="$2" -v cpus="$3" '
            $1 ~ /^[0-9]+$/ && NF >= 5 { ops[n++] = $2 }
            END {
                printf "%-15s %7s %-6s", mix, c, cpus
                min = 0
                for (i = 0; i < n; i++) {
                    printf " %10.0f", ops[i]
                    if (i > 0 && (min == 0 || ops[i] < min)) min = ops[i]
                }
                printf " %8.2f\n", (ops[0] > 0 ? min / ops[0] : 0)
            }'
}
for cpus in all one; do
    for c in 1 4 16; do
        run put "$c" "$cpus"
    done
    run async 1 "$cpus"
    run durable 16 "$cpus"
done
