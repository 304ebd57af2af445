#!/usr/bin/env bash
# Installs what perf/cluster/run.sh compares htkv's cluster with, if missing: Debian's etcd 3.4
# (etcd-server, etcd-client), and curl for its health checks. Like scripts/peers-deps.sh: asks
# dpkg first, runs apt-get only for what is absent; nothing is downloaded from elsewhere.
# Debian starts an etcd service on install where systemd runs; run.sh uses its own ports.
set -euo pipefail

pkgs=(etcd-server etcd-client curl)
miss=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        miss+=("$p")
    fi
done
if [ ${#miss[@]} -eq 0 ]; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
echo "cluster-bench-deps: installing ${miss[*]}"
$sudo apt-get install -y -qq --no-install-recommends "${miss[@]}"
