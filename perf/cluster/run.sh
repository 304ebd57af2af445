#!/usr/bin/env bash
# run.sh - the cluster benchmark in one command: three htkv-node members and three etcd 3.4
# members (Debian's) on 127.0.0.1, each a process with its own data directory on disk, default
# timeouts on both. For each row (puts with 1, 16, 64 writers; linearizable and local gets with
# 16 readers) htkv-cluster-bench loads htkv's leader and then etcd's, back to back, with both
# clusters up. Then etcd is stopped and htkv is measured alone: failover (SIGKILL of the leader
# to the first acknowledged write, CB_TRIALS times, the victim restarted after each) and the
# heartbeat check (a 20 s heavy write load while every member's status is polled).
# Prints the raw lines and a markdown table (ratios htkv / etcd).
# Usage: perf/cluster/run.sh      Environment: BUILD (default build), CB_SECONDS (measured
# seconds per row, 5), CB_TRIALS (failover trials, 5), CB_WATCH_SECONDS (20), CB_KEEP=1 (keep
# the work directory), CB_NO_BUILD=1, JOBS (2), CB_HTKV_ARGS (more htkv-node options, e.g.
# "--snapshot-threshold 100000"; the figures in perf/README.md use none), CB_ONLY=watch (only
# the heartbeat check: no etcd, no rows, no failover).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$root/build}
secs=${CB_SECONDS:-5}
trials=${CB_TRIALS:-5}
watch_secs=${CB_WATCH_SECONDS:-20}
only=${CB_ONLY:-}
case "$only" in
"" | watch) ;;
*)
    echo "run.sh: CB_ONLY must be watch or unset" >&2
    exit 2
    ;;
esac
if [ -z "$only" ]; then "$root/scripts/cluster-bench-deps.sh"; fi
if [ -z "${CB_NO_BUILD:-}" ]; then
    if [ ! -f "$build/CMakeCache.txt" ]; then
        (cd "$root" && cmake --preset release)
    fi
    cmake --build "$build" -j "${JOBS:-2}" --target htkv-node htkv-cluster-bench
fi
node=$build/tools/htkv-node/htkv-node
bench=$build/perf/cluster/htkv-cluster-bench
work=$(mktemp -d "${TMPDIR:-/var/tmp}/htkv-cbench.XXXXXX")
out=$work/results.txt
base=$((20000 + RANDOM % 9000))
hpids=(0 0 0 0)
epids=(0 0 0 0)

cleanup() {
    for p in "${hpids[@]}" "${epids[@]}"; do
        if [ "$p" -gt 0 ]; then kill -9 "$p" 2>/dev/null || true; fi
    done
    if [ -z "${CB_KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r -a hextra <<<"${CB_HTKV_ARGS:-}"
hpeers="1=127.0.0.1:$((base + 1)),2=127.0.0.1:$((base + 2)),3=127.0.0.1:$((base + 3))"
hsocks="$work/h1.sock,$work/h2.sock,$work/h3.sock"
start_htkv() { # ID
    "$node" --id "$1" --listen "127.0.0.1:$((base + $1))" --data "$work/h$1" --peers "$hpeers" \
        --socket "$work/h$1.sock" --no-stdin --quiet "${hextra[@]}" >>"$work/h$1.log" 2>&1 &
    hpids[$1]=$!
}
hstatus() { # ID -> status line or nothing
    "$node" --connect "$work/h$1.sock" status 2>/dev/null || true
}
field() { # LINE NAME
    sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"
}
wait_htkv_leader() {
    for _ in $(seq 300); do
        for i in 1 2 3; do
            if hstatus "$i" | grep -q 'role=leader.*ready=1'; then return 0; fi
        done
        sleep 0.05
    done
    echo "run.sh: htkv has no leader" >&2
    return 1
}
wait_caught_up() { # ID: the member follows a leader and applied what the leader had committed
    local commit=0 i s
    wait_htkv_leader
    for i in 1 2 3; do
        s=$(hstatus "$i")
        if grep -q role=leader <<<"$s"; then commit=$(field "$s" commit); fi
    done
    for _ in $(seq 600); do
        s=$(hstatus "$1")
        if grep -q role=follower <<<"$s" && [ "$(field "$s" applied)" -ge "$commit" ]; then
            return 0
        fi
        sleep 0.05
    done
    echo "run.sh: member $1 did not catch up" >&2
    return 1
}

ecluster="e1=http://127.0.0.1:$((base + 21)),e2=http://127.0.0.1:$((base + 22))"
ecluster="$ecluster,e3=http://127.0.0.1:$((base + 23))"
eeps="127.0.0.1:$((base + 11)),127.0.0.1:$((base + 12)),127.0.0.1:$((base + 13))"
start_etcd() { # ID
    local c="http://127.0.0.1:$((base + 10 + $1))" p="http://127.0.0.1:$((base + 20 + $1))"
    etcd --name "e$1" --data-dir "$work/e$1" --listen-client-urls "$c" \
        --advertise-client-urls "$c" --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" \
        --initial-cluster "$ecluster" --initial-cluster-state new \
        --initial-cluster-token "htkv-cbench-$base" >>"$work/e$1.log" 2>&1 &
    epids[$1]=$!
}
wait_etcd() {
    for _ in $(seq 300); do
        if curl -sf -m 1 "http://127.0.0.1:$((base + 11))/health" | grep -q '"true"'; then
            return 0
        fi
        sleep 0.1
    done
    echo "run.sh: etcd is not healthy" >&2
    return 1
}

row() { # SYSTEM ENDPOINTS ARGS...
    local sys=$1 eps=$2
    shift 2
    "$bench" load --system "$sys" --endpoints "$eps" --seconds "$secs" --warm 1 "$@" |
        tee -a "$out" || echo "run.sh: $sys $* failed" >&2
}

# The rows (htkv then etcd each), then etcd stopped, then failover trials on htkv.
rows_and_failover() {
    local tag=a w op t line victim
    for w in 1 16 64; do
        row htkv "$hsocks" --op put --threads "$w" --tag "$tag"
        row etcd "$eeps" --op put --threads "$w" --tag "$tag"
        tag=$(tr a-y b-z <<<"$tag")
    done
    for op in get lget; do
        row htkv "$hsocks" --op "$op" --threads 16
        row etcd "$eeps" --op "$op" --threads 16
    done
    for i in 1 2 3; do kill -TERM "${epids[$i]}"; done
    for i in 1 2 3; do wait "${epids[$i]}" || true; epids[i]=0; done

    for t in $(seq "$trials"); do
        line=$("$bench" failover --system htkv --endpoints "$hsocks" \
            --pids "${hpids[1]},${hpids[2]},${hpids[3]}") || true
        echo "$line trial=$t" | tee -a "$out"
        victim=$(sed -n 's/.*killed=\([0-9]*\).*/\1/p' <<<"$line")
        if [ -z "$victim" ]; then
            echo "run.sh: failover trial $t failed" >&2
            break
        fi
        wait "${hpids[$victim]}" 2>/dev/null || true
        start_htkv "$victim"
        wait_caught_up "$victim"
    done
}

etcd_version=none
if [ -z "$only" ]; then etcd_version=$(etcd --version | head -1); fi
echo "# htkv-cluster-bench $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $etcd_version"
echo "# work directory $work ($(df -T "$work" | awk 'NR == 2 { print $2 }')), ports from $base"
for i in 1 2 3; do start_htkv "$i"; done
wait_htkv_leader
if [ -z "$only" ]; then
    for i in 1 2 3; do start_etcd "$i"; done
    wait_etcd
    rows_and_failover
fi

"$bench" watch --system htkv --endpoints "$hsocks" --threads 64 --value-bytes 16384 \
    --keys 64 --tag w --seconds "$watch_secs" --warm 0 | tee -a "$out"
# raft_uv names a snapshot snapshot-TERM-INDEX-MS, MS being libuv's clock (milliseconds of
# CLOCK_MONOTONIC, since boot here): printed also as at_ms, wall-clock epoch ms like
# status_max_at_ms above, to match a stall with a snapshot (raft keeps the last two).
boot_ms=$(($(date +%s%3N) - $(tr -d . </proc/uptime | cut -d' ' -f1) * 10))
for i in 1 2 3; do
    find "$work/h$i/raft" -name 'snapshot-*' ! -name '*.meta' -printf "member=$i %f %s\n"
done | awk -v b="$boot_ms" '{ split($2, f, "-"); printf "SNAPSHOT %s at_ms=%.0f\n", $0, b + f[4] }' |
    tee -a "$out"
for i in 1 2 3; do kill -TERM "${hpids[$i]}"; done
for i in 1 2 3; do wait "${hpids[$i]}" || true; hpids[i]=0; done
"$root/perf/cluster/table.sh" "$out"
