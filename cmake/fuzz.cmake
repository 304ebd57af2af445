# fuzz.cmake - libFuzzer build of htkv (-DHTKV_FUZZ=ON, CC=clang; driven by scripts/fuzz.sh).
#
# Included by the top-level CMakeLists.txt before any library is defined, so that every target of
# this build tree, the engine (htkv_obj -> htkv_static) and auth (htkv_auth) included, is compiled
# with coverage instrumentation and ASan + UBSan (-fsanitize=fuzzer-no-link,address,undefined).
# The fuzz targets themselves (tests/fuzz/fuzz_<name>.c) add -fsanitize=fuzzer, which links
# libFuzzer's main(). Everything else in the tree still links: the sanitizer runtime supplies the
# coverage callbacks. A fuzz tree is for fuzzing only; normal and sanitizer builds stay as they are.
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "HTKV_FUZZ needs clang (libFuzzer): configure with CC=clang")
endif()
if(NOT HTKV_SANITIZE STREQUAL "")
    message(FATAL_ERROR "HTKV_FUZZ brings its own sanitizers: leave HTKV_SANITIZE empty")
endif()

set(HTKV_FUZZ_SANITIZERS address,undefined)
add_compile_options(-fsanitize=fuzzer-no-link,${HTKV_FUZZ_SANITIZERS}
                    -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
add_link_options(-fsanitize=${HTKV_FUZZ_SANITIZERS})

add_subdirectory(${PROJECT_SOURCE_DIR}/tests/fuzz ${CMAKE_BINARY_DIR}/fuzz)
