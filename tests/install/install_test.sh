#!/usr/bin/env bash
# install_test.sh BUILD_DIR SOURCE_DIR - what `cmake --install` installs is enough to build and run
# programs on htkv and its auth and cluster modules, without the source tree:
#   1. cmake --install BUILD_DIR --prefix <temporary directory> (not the configured prefix, so the
#      pkg-config files and the CMake package must locate the install from where they lie);
#   2. examples/basic_kv.c and examples/auth_flow.c built with pkg-config (htkv, htkv-auth),
#      shared and static (pkg-config --static; basic_kv also fully static, cc -static);
#   3. the same two built by a small CMake project with find_package(htkv COMPONENTS auth), on
#      htkv::htkv + htkv::auth (shared) and htkv::htkv_static + htkv::auth_static (static);
#   4. every program run on a fresh data directory; the shared ones must load the installed
#      libraries, the static ones none of them;
#   5. with the cluster module, a program on it built the same ways (pkg-config htkv-cluster,
#      find_package(htkv COMPONENTS cluster)) and run.
# Exits 77 (skipped) on a sanitizer or fuzz build, whose libraries only link into instrumented
# programs. Environment: CC (default cc), HTKV_SANITIZE (the build's HTKV_SANITIZE, from CTest).
set -euo pipefail

build=$(cd "${1:?usage: install_test.sh BUILD_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: install_test.sh BUILD_DIR SOURCE_DIR}" && pwd)
cc=${CC:-cc}

if [ -n "${HTKV_SANITIZE:-}" ] || grep -q '^HTKV_FUZZ:BOOL=ON' "$build/CMakeCache.txt"; then
    echo "install: skipped (sanitizer or fuzz build)"
    exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/htkv-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
step() { echo "install: $*"; }
fail() {
    echo "install: FAILED: $*" >&2
    exit 1
}

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || {
    cat "$tmp/install.log" >&2
    fail "cmake --install"
}

pcfile=$(find "$prefix" -name htkv.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$pcfile" ] || fail "no htkv.pc installed"
pcdir=$(dirname "$pcfile")
[ -f "$pcdir/htkv-auth.pc" ] || fail "no htkv-auth.pc installed"
export PKG_CONFIG_PATH="$pcdir"
libdir=$(cd "$(pkg-config --variable=libdir htkv)" && pwd) || fail "htkv.pc: libdir does not exist"
for f in libhtkv.so libhtkv.a libhtkv_auth.so libhtkv_auth.a; do
    [ -e "$libdir/$f" ] || fail "$f is not in the installed libdir $libdir"
done
[ -f "$(pkg-config --variable=includedir htkv)/htkv/auth.h" ] || fail "htkv.pc: includedir has no htkv/auth.h"
[ -f "$(find "$prefix" -name htkvConfig.cmake | head -n 1)" ] || fail "no htkvConfig.cmake installed"

# run NAME PROGRAM [shared|static]: run it on a fresh data directory, check what it loaded.
run() {
    local name=$1 prog=$2 kind=$3 needed loaded
    # The dynamic libraries it needs (DT_NEEDED) and the htkv ones the loader resolves.
    needed=$(readelf -d "$prog" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    case $kind in
    shared)
        grep -qx 'libhtkv\.so\.[0-9]*' <<<"$needed" || fail "$name does not load libhtkv.so"
        if [[ $name == auth_flow* ]]; then
            grep -qx 'libhtkv_auth\.so\.[0-9]*' <<<"$needed" || fail "$name does not load libhtkv_auth.so"
        fi
        # It must load the installed libraries, not another copy.
        loaded=$(ldd "$prog" | grep -E 'libhtkv(_auth)?\.so')
        if grep -vq -- "$prefix" <<<"$loaded"; then
            fail "$name loads an htkv library from outside the install: $loaded"
        fi
        ;;
    static)
        if grep -q libhtkv <<<"$needed"; then
            fail "$name, linked static, still needs: $needed"
        fi
        ;;
    esac
    "$prog" "$tmp/data-$name" >"$tmp/$name.out" 2>&1 || {
        cat "$tmp/$name.out" >&2
        fail "$name exited non-zero"
    }
    case $name in
    basic_kv*) grep -q '^alpha => echo$' "$tmp/$name.out" || fail "$name: unexpected output" ;;
    auth_flow*) grep -q '^revoked token => ' "$tmp/$name.out" || fail "$name: unexpected output" ;;
    esac
    step "$name ($kind) ran"
}

step "pkg-config: htkv $(pkg-config --modversion htkv), htkv-auth $(pkg-config --modversion htkv-auth)"
# Static: a copy of the install without the shared libraries, so that -lhtkv and -lhtkv_auth
# can only mean the archives (and the copy must still describe itself). The auth module links
# libsodium and libargon2 shared (their archives define the same argon2 symbols); htkv alone
# links fully static (cc -static) too.
sprefix="$tmp/static-prefix"
cp -a "$prefix" "$sprefix"
slibdir="$sprefix/${libdir#"$prefix"/}"
rm -f "$slibdir"/libhtkv*.so*
spcdir="$sprefix/${pcdir#"$prefix"/}"
mkdir -p "$tmp/pc"
# shellcheck disable=SC2046 # pkg-config prints lists of flags
{
    "$cc" -o "$tmp/pc/basic_kv" "$src/examples/basic_kv.c" $(pkg-config --cflags --libs htkv) \
        -Wl,-rpath,"$libdir" &&
        "$cc" -o "$tmp/pc/auth_flow" "$src/examples/auth_flow.c" \
            $(pkg-config --cflags --libs htkv-auth) -Wl,-rpath,"$libdir" &&
        export PKG_CONFIG_PATH="$spcdir" &&
        "$cc" -o "$tmp/pc/basic_kv_static" "$src/examples/basic_kv.c" \
            $(pkg-config --static --cflags --libs htkv) &&
        "$cc" -o "$tmp/pc/auth_flow_static" "$src/examples/auth_flow.c" \
            $(pkg-config --static --cflags --libs htkv-auth) &&
        "$cc" -static -o "$tmp/pc/basic_kv_all_static" "$src/examples/basic_kv.c" \
            $(pkg-config --static --cflags --libs htkv)
} >"$tmp/pc.log" 2>&1 || {
    cat "$tmp/pc.log" >&2
    fail "building the examples with pkg-config"
}
export PKG_CONFIG_PATH="$pcdir"
run basic_kv_pc "$tmp/pc/basic_kv" shared
run auth_flow_pc "$tmp/pc/auth_flow" shared
run basic_kv_pc_static "$tmp/pc/basic_kv_static" static
run auth_flow_pc_static "$tmp/pc/auth_flow_static" static
run basic_kv_pc_all_static "$tmp/pc/basic_kv_all_static" static
readelf -d "$tmp/pc/basic_kv_all_static" | grep -q NEEDED && fail "basic_kv_all_static needs shared libraries"

step "CMake: find_package(htkv COMPONENTS auth)"
mkdir -p "$tmp/cm"
cat >"$tmp/cm/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.18)
project(htkv_install_test LANGUAGES C)
find_package(htkv REQUIRED COMPONENTS auth)
add_executable(basic_kv "$src/examples/basic_kv.c")
target_link_libraries(basic_kv PRIVATE htkv::htkv)
add_executable(auth_flow "$src/examples/auth_flow.c")
target_link_libraries(auth_flow PRIVATE htkv::auth)
add_executable(basic_kv_static "$src/examples/basic_kv.c")
target_link_libraries(basic_kv_static PRIVATE htkv::htkv_static)
add_executable(auth_flow_static "$src/examples/auth_flow.c")
target_link_libraries(auth_flow_static PRIVATE htkv::auth_static)
CMAKE
{
    CC=$cc cmake -S "$tmp/cm" -B "$tmp/cm/build" -DCMAKE_PREFIX_PATH="$prefix" \
        -DCMAKE_BUILD_TYPE=Release &&
        cmake --build "$tmp/cm/build" -j 2
} >"$tmp/cm.log" 2>&1 || {
    cat "$tmp/cm.log" >&2
    fail "building the examples with find_package(htkv)"
}
run basic_kv_cmake "$tmp/cm/build/basic_kv" shared
run auth_flow_cmake "$tmp/cm/build/auth_flow" shared
run basic_kv_cmake_static "$tmp/cm/build/basic_kv_static" static
run auth_flow_cmake_static "$tmp/cm/build/auth_flow_static" static

# The cluster module (when this build has it): its files, and a program on it built with
# pkg-config (shared, static) and with find_package(htkv COMPONENTS cluster). The program
# checks a configuration without starting a member: the default one lacks an id (-EINVAL).
if [ -f "$pcdir/htkv-cluster.pc" ]; then
    for f in libhtkv_cluster.so libhtkv_cluster.a; do
        [ -e "$libdir/$f" ] || fail "$f is not in the installed libdir $libdir"
    done
    [ -f "$(pkg-config --variable=includedir htkv)/htkv/cluster.h" ] || fail "no htkv/cluster.h"
    cat >"$tmp/cluster_cfg.c" <<'C'
#include <stdio.h>
#include <htkv/cluster.h>
int main(void)
{
    htkv_cluster_config cfg;
    htkv_cluster_config_init(&cfg);
    htkv_cluster *c = NULL;
    int rc = htkv_cluster_open(&cfg, &c);
    printf("open without an id: %s\n", htkv_strerror(rc));
    return rc == -22 && c == NULL ? 0 : 1;
}
C
    mkdir -p "$tmp/cl"
    cat >"$tmp/cl/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.18)
project(htkv_cluster_install_test LANGUAGES C)
find_package(htkv REQUIRED COMPONENTS cluster)
add_executable(cluster_cfg "$tmp/cluster_cfg.c")
target_link_libraries(cluster_cfg PRIVATE htkv::cluster)
add_executable(cluster_cfg_static "$tmp/cluster_cfg.c")
target_link_libraries(cluster_cfg_static PRIVATE htkv::cluster_static)
CMAKE
    # shellcheck disable=SC2046 # pkg-config prints lists of flags
    {
        "$cc" -o "$tmp/cl/pc" "$tmp/cluster_cfg.c" $(pkg-config --cflags --libs htkv-cluster) \
            -Wl,-rpath,"$libdir" &&
            PKG_CONFIG_PATH="$spcdir" "$cc" -o "$tmp/cl/pc_static" "$tmp/cluster_cfg.c" \
                $(PKG_CONFIG_PATH="$spcdir" pkg-config --static --cflags --libs htkv-cluster) &&
            CC=$cc cmake -S "$tmp/cl" -B "$tmp/cl/build" -DCMAKE_PREFIX_PATH="$prefix" &&
            cmake --build "$tmp/cl/build" -j 2
    } >"$tmp/cl.log" 2>&1 || {
        cat "$tmp/cl.log" >&2
        fail "building a program on the cluster module"
    }
    for p in "$tmp/cl/pc" "$tmp/cl/pc_static" "$tmp/cl/build/cluster_cfg" \
        "$tmp/cl/build/cluster_cfg_static"; do
        "$p" >"$tmp/cl.out" 2>&1 || {
            cat "$tmp/cl.out" >&2
            fail "$p exited non-zero"
        }
    done
    readelf -d "$tmp/cl/pc" | grep -q 'libhtkv_cluster\.so' || fail "cluster program not shared"
    readelf -d "$tmp/cl/pc_static" | grep -q 'libhtkv' && fail "static cluster program needs libhtkv*.so"
    step "cluster module: pkg-config (shared, static) and find_package(htkv COMPONENTS cluster)"
fi

step "passed"
