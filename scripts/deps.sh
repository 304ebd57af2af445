#!/usr/bin/env bash
# Installs the Debian packages htkv needs to build and test, if any are missing. Idempotent: it
# asks dpkg first and runs apt-get only for what is absent. Nothing is downloaded from elsewhere.
set -euo pipefail

pkgs=(
    build-essential cmake pkg-config clang libclang-rt-14-dev clang-format clang-tidy python3
    liburing-dev libsodium-dev libargon2-dev libjemalloc-dev
    libcmocka-dev libbenchmark-dev
    libraft-dev libuv1-dev liblz4-dev
)

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
