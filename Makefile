# cmcp: the two commands of the quick start are `make run` and `make test`.
# Both install missing Debian packages (tools/install-deps.sh) and build with CMake:
# `make run` only what builds and runs the node and cmcpctl, `make test` also the
# test tools (and builds everything).

BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_FUZZ ?= build-fuzz
BUILD_RELEASE ?= build-release
FUZZ_SECONDS ?= 10
JOBS       ?= $(shell nproc)
# Two tests at a time on the 2-core machines this runs on (the chaos, cluster, swarm and
# release-build tests run alone: tests/CMakeLists.txt).
CTEST_ARGS ?= -j2

.PHONY: all deps deps-test node-deps build build-node build-asan build-fuzz build-release run test \
	test-fast test-swarm test-asan-long fuzz-smoke bench bench-json clean help

all: build

help:
	@echo "make run    - install what the node needs, build it and cmcpctl, run one node in the"
	@echo "              foreground (Ctrl-C stops it)"
	@echo "make test   - install the test tools too, build everything, run every test (plain and"
	@echo "              ASan+UBSan builds, fuzzers briefly, a Release build)"
	@echo "make test-swarm - the Docker Swarm stack on an engine of its own (docs/deployment.md)"
	@echo "make test-asan-long - the cluster and chaos tests on the ASan+UBSan build (3.5 min)"
	@echo "make bench  - benchmarks (docs/benchmarks.md)"
	@echo "make bench-json - jansson against json-c and cJSON on a shard's JSON work"
	@echo "make clean  - remove build directories"

# What builds and runs the node and cmcpctl.
deps:
	@./tools/install-deps.sh run

# That and the test and benchmark tools.
deps-test:
	@./tools/install-deps.sh test

# The official MCP clients and conformance suite the tests drive cmcp with.
node-deps: deps-test
	@./tools/install-node-deps.sh

# Configured on every call (a second or two): a tree first configured by `make run`,
# before the test tools were installed, then finds cmocka and python3.
CONFIGURE = cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

# The node and cmcpctl only.
build-node: deps
	$(CONFIGURE)
	cmake --build $(BUILD) -j $(JOBS) --target cmcpd cmcpctl

# Everything: the node, the tools, the unit tests, the benchmark programs.
build: deps-test
	$(CONFIGURE)
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps-test
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DCMCP_SANITIZE=ON >/dev/null
	cmake --build $(BUILD_ASAN) -j $(JOBS)

# The build type a packager types: it must compile warning-free (-Werror) at -O3 too
# (make test checks it with ctest's build/release, in $(BUILD)/release-check).
build-release: deps-test
	cmake -S . -B $(BUILD_RELEASE) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD_RELEASE) -j $(JOBS)

$(BUILD_FUZZ)/Makefile: CMakeLists.txt
	CC=clang cmake -S . -B $(BUILD_FUZZ) -DCMAKE_BUILD_TYPE=Debug -DCMCP_FUZZ=ON

build-fuzz: deps-test $(BUILD_FUZZ)/Makefile
	cmake --build $(BUILD_FUZZ) -j $(JOBS) --target fuzzers

# Each libFuzzer target runs briefly from its seed corpus; a crash fails the run.
fuzz-smoke: build-fuzz
	@set -e; for f in $(BUILD_FUZZ)/fuzz/*_fuzz; do \
	  [ -x "$$f" ] || continue; name=$$(basename $$f); \
	  corpus=tests/fuzz/corpus/$${name%_fuzz}; work=/tmp/cmcp-fuzz-$$name; mkdir -p $$work; \
	  echo "fuzz: $$name for $(FUZZ_SECONDS) s"; \
	  if ! $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$work \
	      $$( [ -d $$corpus ] && echo $$corpus ) > $$work.log 2>&1; then \
	    tail -n 60 $$work.log; echo "fuzz: $$name FAILED"; exit 1; fi; \
	  grep -E 'stat::number_of_executed_units|Done' $$work.log | tail -n 2; \
	done

run: build-node
	exec $(BUILD)/bin/cmcpd $(if $(CONFIG),-c $(CONFIG))

# Everything: the plain build's tests, then the sanitizer build's unit and
# integration tests, and the fuzzers briefly. The plain build's ctest includes
# build/release: the tree compiles warning-free as a Release build (tests/build/).
test: build build-asan node-deps
	cd $(BUILD) && ctest --output-on-failure $(CTEST_ARGS)
	@if [ -f $(BUILD)/swarm-skipped.txt ]; then \
	  echo "swarm/test_swarm was SKIPPED: $$(cat $(BUILD)/swarm-skipped.txt)"; fi
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -L 'unit|integration' $(CTEST_ARGS)
	$(MAKE) fuzz-smoke

# The Docker Swarm stack on a dockerd of its own (make test runs it too, or says why
# it skipped): containers/, docs/deployment.md.
test-swarm: build node-deps
	cd $(BUILD) && ctest --output-on-failure -L swarm $(CTEST_ARGS)
	@if [ -f $(BUILD)/swarm-skipped.txt ]; then \
	  echo "swarm/test_swarm was SKIPPED: $$(cat $(BUILD)/swarm-skipped.txt)"; fi

# The cluster and chaos tests (three-node clusters, the Jepsen-style checker, partitions,
# kill storms) on the ASan+UBSan build: about 3.5 minutes on 2 cores, kept out of
# `make test`'s budget.
test-asan-long: build-asan node-deps
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -L "cluster|chaos" $(CTEST_ARGS)

test-fast: build node-deps
	cd $(BUILD) && ctest --output-on-failure $(CTEST_ARGS)

# The benchmark suite (docs/benchmarks.md): cmcp side by side with the TypeScript
# SDK server, nginx and a minimal echo server, in interleaved rounds. Needs nginx,
# wrk and node; BENCH_ARGS passes options to bench/run.py (--quick, --only ...).
BENCH_ARGS ?=
bench: build node-deps
	@./tools/install-deps.sh bench
	python3 bench/run.py --bin-dir $(BUILD)/bin $(BENCH_ARGS)

# jansson against json-c and cJSON on a shard's per-request JSON work (docs/benchmarks.md).
bench-json: build
	@./tools/install-deps.sh bench
	$(CONFIGURE)
	cmake --build $(BUILD) -j $(JOBS) --target json_bench
	python3 bench/json_bench.py --bin-dir $(BUILD)/bin

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ) $(BUILD_RELEASE)
