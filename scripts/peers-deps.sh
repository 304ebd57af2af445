#!/usr/bin/env bash
# Installs the Debian development packages of the peers that perf/peers compares htkv with, if
# any are missing: RocksDB, LevelDB, LMDB (required: failing to install them fails the script)
# and Tkrzw, WiredTiger (optional: if they cannot be installed, the build leaves them out).
# Idempotent like scripts/deps.sh: it asks dpkg first and runs apt-get only for what is absent.
# Nothing is downloaded from elsewhere.
set -euo pipefail

required=(librocksdb-dev libleveldb-dev liblmdb-dev)
optional=(libtkrzw-dev libwiredtiger-dev)

absent() {
    local out=() p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            out+=("$p")
        fi
    done
    echo "${out[*]}"
}

read -r -a miss_req <<<"$(absent "${required[@]}")"
read -r -a miss_opt <<<"$(absent "${optional[@]}")"
if [ ${#miss_req[@]} -eq 0 ] && [ ${#miss_opt[@]} -eq 0 ]; then
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
if [ ${#miss_req[@]} -gt 0 ]; then
    echo "peers-deps: installing ${miss_req[*]}"
    $sudo apt-get install -y -qq --no-install-recommends "${miss_req[@]}"
fi
for p in "${miss_opt[@]}"; do
    echo "peers-deps: installing $p (optional)"
    if ! $sudo apt-get install -y -qq --no-install-recommends "$p"; then
        echo "peers-deps: $p not installed: htkv-peers will be built without it" >&2
    fi
done
