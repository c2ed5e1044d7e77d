# cmcp: the two commands of the quick start are `make run` and `make test`.
# Both install missing Debian packages (tools/install-deps.sh) and build with CMake.

BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_FUZZ ?= build-fuzz
FUZZ_SECONDS ?= 20
JOBS       ?= $(shell nproc)
CTEST_ARGS ?=

.PHONY: all deps node-deps build build-asan build-fuzz run test test-fast fuzz-smoke bench clean help

all: build

help:
	@echo "make run    - install deps, build, run one node in the foreground (Ctrl-C stops it)"
	@echo "make test   - install deps, build, run every test (plain and ASan+UBSan builds)"
	@echo "make bench  - benchmarks (docs/benchmarks.md)"
	@echo "make clean  - remove build directories"

deps:
	@./tools/install-deps.sh

# The official MCP clients and conformance suite the tests drive cmcp with.
node-deps: deps
	@./tools/install-node-deps.sh

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

$(BUILD_ASAN)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DCMCP_SANITIZE=ON

build-asan: deps $(BUILD_ASAN)/Makefile
	cmake --build $(BUILD_ASAN) -j $(JOBS)

$(BUILD_FUZZ)/Makefile: CMakeLists.txt
	CC=clang cmake -S . -B $(BUILD_FUZZ) -DCMAKE_BUILD_TYPE=Debug -DCMCP_FUZZ=ON

build-fuzz: deps $(BUILD_FUZZ)/Makefile
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

run: build
	exec $(BUILD)/bin/cmcpd $(if $(CONFIG),-c $(CONFIG))

# Everything: the plain build's tests, then the sanitizer build's unit and
# integration tests.
test: build build-asan node-deps
	cd $(BUILD) && ctest --output-on-failure $(CTEST_ARGS)
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -L 'unit|integration' $(CTEST_ARGS)
	$(MAKE) fuzz-smoke

test-fast: build node-deps
	cd $(BUILD) && ctest --output-on-failure $(CTEST_ARGS)

# The benchmark suite (docs/benchmarks.md): cmcp side by side with the TypeScript
# SDK server, nginx and a minimal echo server, in interleaved rounds. Needs nginx,
# wrk and node; BENCH_ARGS passes options to bench/run.py (--quick, --only ...).
BENCH_ARGS ?=
bench: build
	python3 bench/run.py --bin-dir $(BUILD)/bin $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)
