# Thin wrapper over CMake and its presets (CMakePresets.json: release, asan, tsan, fuzz, bench,
# peers; `cmake --list-presets=all`). Every target installs missing Debian packages first
# (scripts/deps.sh). The presets turn HTKV_WERROR on: warnings are errors in these builds.
#   make demo     set up, build, run examples/basic_kv on a fresh directory
#   make cluster-demo  build, then three htkv-node members on 127.0.0.1: writes, SIGKILL of the
#                 leader, a new leader, every acknowledged write on every member; a fourth
#                 member added, leadership handed to it, a member removed
#                 (scripts/cluster-demo.sh)
#   make cluster-bench  htkv's three-member cluster against Debian's etcd 3.4 on 127.0.0.1:
#                 puts, gets, failover, heartbeat check (perf/cluster/run.sh; ~3 min)
#   make test     set up, build, run every test: release (inline, workers on io_uring, workers
#                 on syscalls), ASan+UBSan (inline, workers), TSan (concurrency tests), then a
#                 short fuzz run (fuzz-smoke)
#   make build    configure + build (Release with debug info) into build/
#   make asan     build + test with address and undefined-behaviour sanitizers into build-asan/
#   make fuzz-smoke  the fuzz targets for FUZZ_SMOKE_SECONDS (5) each: the last step of make test
#   make tsan     build the concurrency tests (target concurrency-tests) with clang (GCC's TSan
#                 rejects atomic_thread_fence) and the thread sanitizer into build-tsan/, run them
#   make fuzz     build the libFuzzer targets with clang into build-fuzz/ and run each for
#                 FUZZ_SECONDS (default 30) on a copy of its seed corpus (scripts/fuzz.sh)
#   make format   clang-format every C source in place
#   make clean    remove every build directory (build/, build-*/)
JOBS ?= $(shell nproc)
# The release tree: the binaryDir of the release preset (fixed there, so not settable here).
override BUILD := build
CTEST_FLAGS ?= --output-on-failure

.PHONY: all deps build demo cluster-demo test test-release asan tsan fuzz fuzz-smoke format format-check clean bench peers cluster-bench

all: build

deps:
	@./scripts/deps.sh

build: deps
	cmake --preset release
	cmake --build --preset release -j $(JOBS)

demo: build
	@rm -rf $(BUILD)/demo-data
	$(BUILD)/basic_kv $(BUILD)/demo-data

cluster-demo: build
	./scripts/cluster-demo.sh $(BUILD)/tools/htkv-node/htkv-node

cluster-bench: deps
	cmake --preset release
	JOBS=$(JOBS) ./perf/cluster/run.sh

# The suite runs in three execution modes: inline, 2 workers on io_uring, 2 workers on syscalls
# (test presets release, release-uring, release-sync). The concurrency tests run their own matrix
# of modes (inline and workers, both backends, every sync mode) whatever HTKV_TEST_WORKERS says,
# so they run in the first pass only; so do the tests labelled "once" (stores in modes of their
# own, or the files a closed store leaves: the damage matrix, the replica model, htkvctl; the
# install). The first two passes keep their stores on the build tree's disk; the later passes
# (release-sync, asan, asan-workers, tsan) on a tmpfs when /dev/shm has room (tests/README.md).
test-release: build
	ctest --preset release $(CTEST_FLAGS) -j $(JOBS)
	ctest --preset release-uring $(CTEST_FLAGS) -j $(JOBS)
	ctest --preset release-sync $(CTEST_FLAGS) -j $(JOBS)

# The kill loops run half their cycles under the sanitizers (the release runs do them all), the
# cluster's a third (its 30 SIGKILLs of htkv-node processes run in the release pass), the damage
# matrix half its cases (the seed picks which; each spawns htkvctl, slow to start under ASan).
ASAN_CRASH_CYCLES ?= 20
ASAN_CLUSTER_KILL_CYCLES ?= 10
ASAN_DAMAGE_EVERY ?= 2
asan: deps
	cmake --preset asan
	cmake --build --preset asan -j $(JOBS)
	HTKV_CRASH_CYCLES=$(ASAN_CRASH_CYCLES) HTKV_CLUSTER_KILL_CYCLES=$(ASAN_CLUSTER_KILL_CYCLES) \
		HTKV_DAMAGE_EVERY=$(ASAN_DAMAGE_EVERY) ctest --preset asan $(CTEST_FLAGS) -j $(JOBS)
	HTKV_CRASH_CYCLES=$(ASAN_CRASH_CYCLES) ctest --preset asan-workers $(CTEST_FLAGS) -j $(JOBS)

tsan: deps
	cmake --preset tsan
	cmake --build --preset tsan -j $(JOBS)
	ctest --preset tsan $(CTEST_FLAGS) -j $(JOBS)

# A short fuzz run (FUZZ_SMOKE_SECONDS per target) on the seed corpora, regressions included.
FUZZ_SMOKE_SECONDS ?= 5
fuzz-smoke: deps
	JOBS=$(JOBS) ./scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS)

test: test-release asan tsan fuzz-smoke
	@echo "make test: all suites passed"

# make bench: the Google Benchmark table (bench/, built with -DHTKV_BENCH=ON into build-bench/),
# then every htkv-perf workload, 3 trials. BENCH_FLAGS: extra htkv-bench flags.
BENCH_FLAGS ?= --benchmark_min_time=0.2
bench: deps
	cmake --preset bench
	cmake --build --preset bench -j $(JOBS)
	build-bench/htkv-bench $(BENCH_FLAGS)
	build-bench/htkv-perf --workload all --trials 3 --dir "$${TMPDIR:-/tmp}/htkv-perf-$$$$"

# make peers: htkv side by side with Debian's RocksDB, LevelDB, LMDB, Tkrzw and WiredTiger
# (perf/peers/, built with -DHTKV_PEERS=ON into build-peers/); scripts/peers-deps.sh installs them
# first (Tkrzw and WiredTiger are optional: left out when their packages are missing).
# PEERS_FLAGS: htkv-peers flags, e.g. PEERS_FLAGS=--quick.
PEERS_FLAGS ?=
peers: deps
	@./scripts/peers-deps.sh
	cmake --preset peers
	cmake --build --preset peers -j $(JOBS)
	build-peers/htkv-peers $(PEERS_FLAGS)

# make fuzz: longer runs than make test's fuzz-smoke. Exits non-zero on any crash, leak or hang; the input is kept
# under build-fuzz/fuzz-run/<target>/.
FUZZ_SECONDS ?= 30
fuzz: deps
	JOBS=$(JOBS) ./scripts/fuzz.sh $(FUZZ_SECONDS)

format:
	clang-format -i $$(git ls-files '*.c' '*.h' '*.cc')

format-check:
	clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h' '*.cc')

# Every build tree: the presets' (build/, build-asan/, build-tsan/, build-fuzz/, build-bench/,
# build-peers/) and any other build-*/ (the top-level .gitignore ignores /build*/).
clean:
	rm -rf build build-*/
