#!/usr/bin/env bash
# check_function_size.sh - no function of the library, auth, cluster or tools is longer than 80
# lines.
#
# Runs clang-tidy with the root .clang-tidy (only readability-function-size, LineThreshold 80:
# lines of the definition, whitespace and comments included) on engine/*.c, uring/*.c, auth/*.c,
# cluster/*.c and tools/**/*.c, in parallel, with the build's flags passed after `--` (no
# compilation database needed). Lists every function over the limit; fails when one is not in the allowlist
# scripts/function-size-allow.txt (lines of `<function-name> <reason>`; '#' starts a comment).
# Allowlist entries that are no longer over the limit are listed as stale (remove them).
# Usage: scripts/check_function_size.sh [SOURCE_ROOT]   (default: the directory above this script)
# Environment: CLANG_TIDY (default clang-tidy, else clang-tidy-14), JOBS (default 2),
# FUNCTION_SIZE_ALLOW (allowlist path). Exits 77 (skipped) when clang-tidy is not installed.
set -uo pipefail

root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root" || exit 2
jobs=${JOBS:-2}
allow=${FUNCTION_SIZE_ALLOW:-$root/scripts/function-size-allow.txt}
tidy=${CLANG_TIDY:-}
if [ -z "$tidy" ]; then
    for t in clang-tidy clang-tidy-14; do
        if command -v "$t" >/dev/null 2>&1; then
            tidy=$t
            break
        fi
    done
fi
if [ -z "$tidy" ] || ! command -v "$tidy" >/dev/null 2>&1; then
    echo "check_function_size: clang-tidy not found (Debian package clang-tidy): skipped" >&2
    exit 77
fi

files=()
while IFS= read -r -d '' f; do
    files+=("${f#./}")
done < <(find engine uring auth cluster tools -type f -name '*.c' -print0 2>/dev/null | sort -z)
if [ ${#files[@]} -eq 0 ]; then
    echo "check_function_size: no sources found under $root" >&2
    exit 2
fi

pkgflags=()
if command -v pkg-config >/dev/null 2>&1; then
    for p in liburing jemalloc libsodium libargon2 raft libuv; do
        # shellcheck disable=SC2207
        pkgflags+=($(pkg-config --cflags "$p" 2>/dev/null))
    done
fi
flags="-std=c11 -D_GNU_SOURCE -DHTKV_BUILDING=1 -DHTKV_JEMALLOC=1 -I$root -I$root/include"
flags+=" -Wno-unknown-warning-option ${pkgflags[*]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export tidy flags work
# One clang-tidy per file; its output goes to $work/<file>.out, a failure to run to .err.
printf '%s\0' "${files[@]}" | xargs -0 -n 1 -P "$jobs" bash -c '
    out="$work/$(printf "%s" "$1" | tr "/" "_")"
    # shellcheck disable=SC2086
    if ! "$tidy" --quiet "$1" -- $flags >"$out.out" 2>"$out.log"; then
        cp "$out.log" "$out.err"
    fi' _

errs=0
for e in "$work"/*.err; do
    [ -e "$e" ] || continue
    errs=$((errs + 1))
    echo "clang-tidy failed on ${e##*/}:"
    sed 's/^/    /' "$e" | head -20
    grep -h 'error:' "${e%.err}.out" | sed 's/^/    /' | head -20
done

# "FILE:LINE:COL: warning: function 'NAME' exceeds ..." then "...: note: N lines including ...".
over=$(cat "$work"/*.out 2>/dev/null | awk '
    /warning: function .* exceeds recommended size\/complexity thresholds/ {
        loc = $1; sub(/:$/, "", loc); sub(/:[0-9]+$/, "", loc)
        name = $0; sub(/^[^\x27]*\x27/, "", name); sub(/\x27.*$/, "", name)
        next
    }
    name != "" && /note: [0-9]+ lines including whitespace and comments/ {
        n = $0; sub(/^.*note: /, "", n); sub(/ lines.*$/, "", n)
        sub("^" ENVIRON["PWD"] "/", "", loc)
        print name, n, loc
        name = ""
    }' | sort -k2,2nr -k1,1)

declare -A allowed=()
if [ -f "$allow" ]; then
    while read -r name _; do
        [ -n "$name" ] && allowed[$name]=1
    done < <(sed 's/#.*//' "$allow")
fi

bad=0
declare -A seen=()
if [ -n "$over" ]; then
    echo "functions over 80 lines (lines including whitespace and comments):"
    while read -r name n loc; do
        seen[$name]=1
        if [ -n "${allowed[$name]:-}" ]; then
            printf '  %-36s %4s  %s  (allowed)\n' "$name" "$n" "$loc"
        else
            printf '  %-36s %4s  %s  NOT IN %s\n' "$name" "$n" "$loc" "${allow#"$root"/}"
            bad=$((bad + 1))
        fi
    done <<<"$over"
fi
for name in "${!allowed[@]}"; do
    if [ -z "${seen[$name]:-}" ]; then
        echo "stale allowlist entry: $name is no longer over 80 lines (remove it from ${allow#"$root"/})"
    fi
done
if [ $errs -ne 0 ]; then
    echo "check_function_size: clang-tidy failed on $errs files" >&2
    exit 1
fi
if [ $bad -ne 0 ]; then
    echo "check_function_size: $bad functions over 80 lines are not in the allowlist" >&2
    exit 1
fi
echo "check_function_size: ${#files[@]} files, no function over 80 lines outside the allowlist"
