#!/usr/bin/env bash
# table.sh - turns the lines htkv-cluster-bench wrote (RESULT, FAILOVER, WATCH) into the
# markdown tables of perf/README.md: per row htkv and etcd side by side with the ratios
# htkv / etcd, the failover trials with their median, the heartbeat check.
# Usage: perf/cluster/table.sh RESULTS_FILE
set -euo pipefail

awk '
function val(name,   i, kv) {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] }
    return ""
}
/^RESULT/ {
    k = val("op") " " val("threads")
    if (!(k in seen)) { seen[k] = 1; order[n++] = k }
    s = val("system")
    ops[k, s] = val("ops_s"); p50[k, s] = val("p50_us"); p99[k, s] = val("p99_us")
    bad[k, s] = val("refused") + val("broken")
}
/^FAILOVER/ { fo[nf++] = val("ms") + 0; terms = terms " " val("term_before") "->" val("term_after") }
/^WATCH/ || /^SNAPSHOT/ { watch[nw++] = $0 }
END {
    print "| operation | clients | htkv ops/s | htkv p50 µs | htkv p99 µs | etcd ops/s | etcd p50 µs | etcd p99 µs | ops/s htkv/etcd | p99 htkv/etcd |"
    print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for (i = 0; i < n; i++) {
        k = order[i]; split(k, kk, " ")
        name = kk[1] == "put" ? "put" : kk[1] == "get" ? "get (linearizable)" : "get (local)"
        r = ops[k, "etcd"] > 0 ? sprintf("%.2fx", ops[k, "htkv"] / ops[k, "etcd"]) : "-"
        q = p99[k, "etcd"] > 0 ? sprintf("%.2fx", p99[k, "htkv"] / p99[k, "etcd"]) : "-"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name, kk[2], ops[k, "htkv"], \
            p50[k, "htkv"], p99[k, "htkv"], ops[k, "etcd"], p50[k, "etcd"], p99[k, "etcd"], r, q
        if (bad[k, "htkv"] + bad[k, "etcd"] > 0)
            printf "|   (refused or broken: htkv %d, etcd %d) |||||||||\n", bad[k, "htkv"], bad[k, "etcd"]
    }
    if (nf > 0) {
        for (i = 0; i < nf; i++) for (j = i + 1; j < nf; j++) if (fo[j] < fo[i]) { t = fo[i]; fo[i] = fo[j]; fo[j] = t }
        line = ""
        for (i = 0; i < nf; i++) line = line (i ? ", " : "") sprintf("%.0f", fo[i])
        printf "\nhtkv failover (SIGKILL of the leader -> first acknowledged write), %d trials: median %.0f ms; sorted: %s ms; terms:%s\n", \
            nf, nf % 2 ? fo[int(nf / 2)] : (fo[nf / 2 - 1] + fo[nf / 2]) / 2, line, terms
    }
    if (nw > 0) print "\nheartbeat check:"
    for (i = 0; i < nw; i++) print "    " watch[i]
}' "$1"
