#!/usr/bin/env bash
# fuzz.sh [SECONDS] - build the libFuzzer targets of tests/fuzz/ and run each for SECONDS
# (default 30) on a copy of its seed corpus (tests/fuzz/corpus/<target>/).
#
# Configures build-fuzz/ with the fuzz preset (clang, -DHTKV_FUZZ=ON: engine and auth
# instrumented with -fsanitize=fuzzer-no-link,address,undefined, HTKV_DASSERT on) and builds only
# the fuzz targets.
# Each target runs in build-fuzz/fuzz-run/<target>/ (its grown corpus, log and any crashing
# input, recreated every run). Exits non-zero when any target crashed, leaked or hung (a single
# input running past FUZZ_TIMEOUT seconds, default 25); every target runs either way.
# Environment: JOBS (build parallelism), FUZZ_TIMEOUT, FUZZ_FLAGS (extra libFuzzer flags),
# HTKV_FUZZ_TMP (scratch directory base of the targets; default /dev/shm, else /tmp).
set -euo pipefail

secs=${1:-30}
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
    echo "usage: $0 [SECONDS]   (SECONDS per target, default 30)" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build-fuzz"
jobs=${JOBS:-$(nproc)}
timeout_s=${FUZZ_TIMEOUT:-25}
targets=(fuzz_rec fuzz_manifest fuzz_segment_open fuzz_snapshot fuzz_hint fuzz_kix fuzz_closing fuzz_apikey_token)

# libFuzzer ships in compiler-rt, a package of its own on Debian.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
cat >"$probe/probe.c" <<'PROBE'
int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n);
int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }
PROBE
if ! clang -fsanitize=fuzzer,address,undefined "$probe/probe.c" -o "$probe/probe" 2>"$probe/err"; then
    cat "$probe/err" >&2
    echo "fuzz: clang cannot link -fsanitize=fuzzer; install it: apt-get install -y clang libclang-rt-14-dev" >&2
    exit 2
fi

# The fuzz preset (CMakePresets.json): build-fuzz/, clang, HTKV_FUZZ, HTKV_DEBUG, HTKV_WERROR.
(cd "$root" && cmake --preset fuzz >/dev/null && cmake --build --preset fuzz -j "$jobs" --target "${targets[@]}")

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
summary=()
for t in "${targets[@]}"; do
    run="$build/fuzz-run/$t"
    rm -rf "$run"
    mkdir -p "$run/corpus"
    cp "$root/tests/fuzz/corpus/$t/"* "$run/corpus/"
    echo "fuzz: $t for ${secs}s (log: $run/log)"
    start=$(date +%s)
    rc=0
    # shellcheck disable=SC2086 # FUZZ_FLAGS is a list of flags
    # -error_exitcode=1: libFuzzer's default, 77, is the suite's "skipped" (STYLE S7.6).
    "$build/fuzz/$t" -max_total_time="$secs" -timeout="$timeout_s" -error_exitcode=1 \
        -print_final_stats=1 -artifact_prefix="$run/" ${FUZZ_FLAGS:-} "$run/corpus" \
        >"$run/log" 2>&1 || rc=$?
    took=$(($(date +%s) - start))
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$run/log" | tail -n 1 || true)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$run/log" | tail -n 1)
    summary+=("$(printf '%-18s %4ss  %10s runs  %s' "$t" "$took" "${runs:-?}" \
        "$(sed -E 's/^#[0-9]+[[:space:]]+DONE[[:space:]]+//; s/ lim:.*//' <<<"$done_line")")")
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        echo "fuzz: $t FAILED (exit $rc); the end of its log:" >&2
        tail -n 40 "$run/log" >&2
        for a in "$run"/crash-* "$run"/leak-* "$run"/timeout-* "$run"/oom-*; do
            [ -e "$a" ] && echo "fuzz: input kept at $a (replay: $build/fuzz/$t $a)" >&2
        done
    fi
done

echo "fuzz: summary (seconds, executions, coverage at the end)"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: all targets ran ${secs}s without a finding"
