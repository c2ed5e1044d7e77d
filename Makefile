# cmcp: the two commands of the quick start are `make run` and `make test`.
# Both install missing Debian packages (tools/install-deps.sh) and build with CMake.

BUILD      ?= build
BUILD_ASAN ?= build-asan
JOBS       ?= $(shell nproc)
CTEST_ARGS ?=

.PHONY: all deps build build-asan run test test-fast test-asan fuzz bench clean help

all: build

help:
	@echo "make run    - install deps, build, run one node in the foreground (Ctrl-C stops it)"
	@echo "make test   - install deps, build, run every test (plain and ASan+UBSan builds)"
	@echo "make bench  - benchmarks (docs/benchmarks.md)"
	@echo "make clean  - remove build directories"

deps:
	@./tools/install-deps.sh

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

$(BUILD_ASAN)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DCMCP_SANITIZE=ON

build-asan: deps $(BUILD_ASAN)/Makefile
	cmake --build $(BUILD_ASAN) -j $(JOBS)

run: build
	exec $(BUILD)/bin/cmcpd $(if $(CONFIG),-c $(CONFIG))

# Everything: the plain build's tests, then the sanitizer build's unit and
# integration tests.
test: build build-asan
	cd $(BUILD) && ctest --output-on-failure $(CTEST_ARGS)
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -L 'unit|integration' $(CTEST_ARGS)

test-fast: build
	cd $(BUILD) && ctest --output-on-failure $(CTEST_ARGS)

bench: build
	@echo "benchmarks: see bench/ and docs/benchmarks.md"
	python3 bench/restart_latency.py --cmcpd $(BUILD)/bin/cmcpd

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) build-fuzz
