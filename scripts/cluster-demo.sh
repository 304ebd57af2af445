#!/usr/bin/env bash
# cluster-demo.sh - three htkv-node members on 127.0.0.1: writes, SIGKILL of the leader, a new
# leader elected, more writes, the old leader back, and every acknowledged write read on every
# member with the same version; then membership: a fourth member added, leadership handed to
# it, a member removed. Prints what happens as it happens.
# Usage: scripts/cluster-demo.sh [HTKV_NODE]   (default: build/tools/htkv-node/htkv-node)
# Cleans up its processes and its temporary directory on any exit. Exits 0 when every check
# held, 1 otherwise.
set -euo pipefail

node=${1:-build/tools/htkv-node/htkv-node}
[ -x "$node" ] || { echo "cluster-demo: $node not built (make build)" >&2; exit 2; }
node=$(cd "$(dirname "$node")" && pwd)/$(basename "$node")
dir=$(mktemp -d "${TMPDIR:-/tmp}/htkv-cluster-demo.XXXXXX")
declare -A pid
cleanup() {
    for i in "${!pid[@]}"; do kill -9 "${pid[$i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # exit runs cleanup

# Three ports that were free a moment ago (bind port 0, read it back).
read -r -a port < <(python3 -c 'import socket
s=[socket.socket() for _ in range(4)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
peers="1=127.0.0.1:${port[0]},2=127.0.0.1:${port[1]},3=127.0.0.1:${port[2]}"

start() { # start member $1 (with --join as $2 for a member that waits to be added)
    local i=$1
    "$node" --id "$i" --listen "127.0.0.1:${port[$((i - 1))]}" --data "$dir/data$i" \
        ${2:---peers "$peers"} --socket "$dir/sock$i" --no-stdin --election-ms 300 \
        --heartbeat-ms 30 --quiet 2>>"$dir/log$i" &
    pid[$i]=$!
    echo "  member $i started (pid ${pid[$i]}, raft 127.0.0.1:${port[$((i - 1))]})"
}
ask() { "$node" --connect "$dir/sock$1" "${@:2}" 2>/dev/null || true; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
wait_leader() { # print the id of the leader among the members given, within 10 s
    for _ in $(seq 200); do
        for i in "$@"; do
            if ask "$i" status | grep -q "role=leader .*ready=1"; then echo "$i"; return 0; fi
        done
        sleep 0.05
    done
    echo "cluster-demo: no leader elected" >&2; return 1
}
declare -A acked
put() { # put $2=$3 through member $1; remember the acknowledged version
    local a; a=$(ask "$1" put "$2" "$3")
    echo "  put $2=$3 on member $1 -> $a"
    [[ $a == OK* ]] && acked[$2]="${a#OK } $3"
    return 0
}

echo "== starting three members in $dir"
for i in 1 2 3; do start "$i"; done
leader=$(wait_leader 1 2 3)
echo "== member $leader is the leader: $(ask "$leader" status | field term | sed 's/^/term /')"
for k in 1 2 3 4 5; do put "$leader" "key$k" "value$k"; done
follower=$(( leader % 3 + 1 ))
echo "== a write sent to follower $follower: $(ask "$follower" put key0 x)"

echo "== SIGKILL of the leader, member $leader (pid ${pid[$leader]})"
kill -9 "${pid[$leader]}"; wait "${pid[$leader]}" 2>/dev/null || true; unset "pid[$leader]"
others=(); for i in 1 2 3; do [ "$i" != "$leader" ] && others+=("$i"); done
t0=$(date +%s%N)
new=$(wait_leader "${others[@]}")
echo "== member $new elected leader after $(( ($(date +%s%N) - t0) / 1000000 )) ms:" \
     "$(ask "$new" status | field term | sed 's/^/term /')"
for k in 6 7 8; do put "$new" "key$k" "value$k"; done
put "$new" key1 "value1-rewritten"

echo "== member $leader restarts"
start "$leader"
for _ in $(seq 200); do
    v=$(ask "$leader" status | field version)
    [ "$v" = "$(ask "$new" status | field version)" ] && break
    sleep 0.05
done
echo "  member $leader caught up to version $v"

echo "== every acknowledged write, read locally on every member"
bad=0
for k in $(printf '%s\n' "${!acked[@]}" | sort); do
    want="VALUE ${acked[$k]}"; line="  $k (acked: ${acked[$k]}):"
    for i in 1 2 3; do
        got=$(ask "$i" lget "$k")
        if [ "$got" = "$want" ]; then line+=" m$i ok"; else line+=" m$i WRONG($got)"; bad=1; fi
    done
    echo "$line"
done
echo "== linearizable read on the leader: get key1 -> $(ask "$new" get key1)"

echo "== membership: member 4 starts empty (--join) and is added by the leader"
start 4 --join
echo "  add 4 127.0.0.1:${port[3]} on member $new -> $(ask "$new" add 4 "127.0.0.1:${port[3]}")"
echo "  members as the leader sees them (id@address/role/match index):"
echo "    $(ask "$new" status | field members)"
for _ in $(seq 100); do # it applies what it was sent once it learns the commit index
    got=$(ask 4 lget key1)
    [ "$got" = "VALUE ${acked[key1]}" ] && break
    sleep 0.02
done
echo "  member 4 reads key1 locally -> $got"
[ "$got" = "VALUE ${acked[key1]}" ] || bad=1
echo "== leadership handed to member 4: transfer 4 on member $new -> $(ask "$new" transfer 4)"
echo "  member 4: $(ask 4 status | field role)"
put 4 key9 value9
echo "== member $leader removed: remove $leader on member 4 -> $(ask 4 remove "$leader")"
echo "    $(ask 4 status | field members)"
put 4 key10 value10

for i in "${!pid[@]}"; do ask "$i" quit >/dev/null; done
for i in "${!pid[@]}"; do wait "${pid[$i]}" 2>/dev/null || true; done
pid=()
if [ "$bad" = 0 ]; then echo "== cluster demo: every acknowledged write is on every member"; fi
exit "$bad"
