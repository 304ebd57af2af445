#!/usr/bin/env bash
# Installs the Debian development packages of the peers that perf/peers compares htkv with
# (RocksDB, LevelDB, LMDB), if any are missing. Idempotent like scripts/deps.sh: it asks dpkg
# first and runs apt-get only for what is absent. Nothing is downloaded from elsewhere.
set -euo pipefail

pkgs=(librocksdb-dev libleveldb-dev liblmdb-dev)

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "peers-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
