# Thin wrapper: the real build is CMake. `make test` and `make demo` work on a fresh Debian 12.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test sanitize demo bench python clean

all: build

deps:
	@scripts/bootstrap.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) > $(BUILD).configure.log 2>&1 || (cat $(BUILD).configure.log; exit 1)

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# ASan + UBSan build (clang) of the library, most unit tests, emulated-device tests and the fuzzers,
# then runs them and fuzzes each target (scripts/sanitize.sh says what is left out; README "Bad input").
sanitize: deps
	@JOBS=$(JOBS) scripts/sanitize.sh $(BUILD)-sanitize

# The Python module: $(BUILD)/python/aesthete.cpython-*.so (PYTHONPATH=$(BUILD)/python; README "From Python").
python: configure
	@cmake --build $(BUILD) -j $(JOBS) --target python

demo: build
	@scripts/demo.sh $(BUILD)

bench: build
	@$(BUILD)/bench_conv

clean:
	rm -rf $(BUILD) $(BUILD).configure.log
