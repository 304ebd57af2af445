#!/usr/bin/env bash
# check_headers.sh - every header compiles on its own.
#
# For each header under engine/, include/htkv/, uring/, auth/, cluster/ and tests/support/,
# compiles a translation unit that includes only that header, with the include directories,
# warnings and defines of the build (CMakeLists.txt: -std=c11 -Wall -Wextra -Werror -Wshadow
# -Wstrict-prototypes -Wmissing-prototypes -Wno-missing-field-initializers, -D_GNU_SOURCE;
# -DHTKV_BUILDING=1 and -DHTKV_JEMALLOC=1 as the library's own sources see them). The public
# headers (include/htkv/) are compiled a second time as an application sees them: no defines,
# only include/ on the path. Every failure is reported; exits 1 when any header failed.
# Usage: scripts/check_headers.sh [SOURCE_ROOT]   (default: the directory above this script)
# Environment: CC (default cc), JOBS (parallel compilers, default 2), HEADER_CHECK_FLAGS (extra).
set -uo pipefail

root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root" || exit 2
cc=${CC:-cc}
jobs=${JOBS:-2}
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "check_headers: compiler $cc not found" >&2
    exit 2
fi

warn=(-std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
      -Wno-missing-field-initializers)
pkgflags=()
if command -v pkg-config >/dev/null 2>&1; then
    for p in liburing jemalloc cmocka libsodium libargon2 raft libuv; do
        # shellcheck disable=SC2207
        pkgflags+=($(pkg-config --cflags "$p" 2>/dev/null))
    done
fi
# shellcheck disable=SC2206
extra=(${HEADER_CHECK_FLAGS:-})
internal=("${warn[@]}" -D_GNU_SOURCE -DHTKV_BUILDING=1 -DHTKV_JEMALLOC=1 -I"$root"
          -I"$root/include" "${pkgflags[@]}" "${extra[@]}")
public=("${warn[@]}" -I"$root/include" "${extra[@]}")

headers=()
for d in engine include/htkv uring auth cluster tests/support; do
    [ -d "$d" ] || continue
    while IFS= read -r -d '' h; do
        headers+=("${h#./}")
    done < <(find "$d" -type f -name '*.h' -print0 | sort -z)
done
if [ ${#headers[@]} -eq 0 ]; then
    echo "check_headers: no headers found under $root" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One job: MODE HEADER. Writes the compiler's output to $work/<n>.log on failure.
check_one() {
    local mode=$1 h=$2 tag src
    tag=$(printf '%s' "$mode-$h" | tr '/.' '__')
    src="$work/$tag.c"
    printf '#include "%s"\n' "$root/$h" >"$src"
    local flags
    if [ "$mode" = public ]; then
        flags=("${public[@]}")
    else
        flags=("${internal[@]}")
    fi
    if ! "$cc" "${flags[@]}" -fsyntax-only "$src" >"$work/$tag.log" 2>&1; then
        echo "$mode $h" >"$work/$tag.fail"
    fi
}
export -f check_one
export root work cc
export internal_s="${internal[*]}" public_s="${public[*]}"

{
    for h in "${headers[@]}"; do
        printf 'internal\0%s\0' "$h"
        case $h in include/htkv/*) printf 'public\0%s\0' "$h" ;; esac
    done
} | xargs -0 -n 2 -P "$jobs" bash -c '
    read -r -a internal <<<"$internal_s"; read -r -a public <<<"$public_s"; check_one "$@"' _

fails=0
for f in "$work"/*.fail; do
    [ -e "$f" ] || continue
    fails=$((fails + 1))
    read -r mode h <"$f"
    echo "FAIL ($mode flags): $h"
    sed 's/^/    /' "${f%.fail}.log" | head -20
done
n=${#headers[@]}
if [ $fails -ne 0 ]; then
    echo "check_headers: $fails of the compiles of $n headers failed" >&2
    exit 1
fi
echo "check_headers: $n headers compile on their own"
