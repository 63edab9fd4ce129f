# moe2onnx — one make for everything.
#   make            release build: build/moe2onnx
#   make asan       same sources with ASan+UBSan: build-asan/moe2onnx
#   make tsan       same sources with ThreadSanitizer: build-tsan/moe2onnx (data races)
#   make test       full test suite (release + sanitizer unit tests, ONNX Runtime end-to-end)
#   make bench      benchmark programs
# Sources are found by wildcard, so adding a file to a src/ folder needs no Makefile edit.

CC      ?= cc
PKGS    := libprotobuf-c libcjson
CSTD    := -std=c11 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wvla -Wno-format-truncation
OPT     ?= -O2 -g
CFLAGS_ALL = $(CSTD) $(WARN) $(OPT) -pthread $(shell pkg-config --cflags $(PKGS)) -Isrc -I$(BUILD)/gen $(EXTRA_CFLAGS)
LDLIBS  := $(shell pkg-config --libs $(PKGS)) -lm -pthread

BUILD   ?= build
ONNX_PROTO ?= /usr/include/onnx/onnx.proto

LIB_SRC  := $(filter-out src/cli/main.c,$(wildcard src/*/*.c))
GEN_SRC  := $(BUILD)/gen/onnx/onnx.pb-c.c
LIB_OBJ  := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRC)) $(BUILD)/obj/gen/onnx.pb-c.o
TEST_SRC := $(wildcard tests/unit/test_*.c)
TEST_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOL_BIN := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(TOOL_SRC))
BENCH_SRC:= $(wildcard bench/*.c)
BENCH_BIN:= $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))


.PHONY: all asan tsan setup test bench clean tests valgrind fuzz example
all: $(BUILD)/moe2onnx tests

tests: $(TEST_BIN) $(TOOL_BIN)

$(BUILD)/gen/onnx/onnx.pb-c.c $(BUILD)/gen/onnx/onnx.pb-c.h &: $(ONNX_PROTO)
	@mkdir -p $(BUILD)/gen/onnx
	cp $(ONNX_PROTO) $(BUILD)/gen/onnx/onnx.proto
	cd $(BUILD)/gen && protoc-c --c_out=. onnx/onnx.proto

# Generated code is not ours: compile it without -Werror's extra warnings.
$(BUILD)/obj/gen/onnx.pb-c.o: $(GEN_SRC)
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(OPT) $(EXTRA_CFLAGS) $(shell pkg-config --cflags libprotobuf-c) -I$(BUILD)/gen -c $< -o $@

$(BUILD)/obj/%.o: src/%.c $(BUILD)/gen/onnx/onnx.pb-c.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(BUILD)/libmoe2onnx.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/moe2onnx: src/cli/main.c $(BUILD)/libmoe2onnx.a
	$(CC) $(CFLAGS_ALL) $< $(BUILD)/libmoe2onnx.a $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(BUILD)/libmoe2onnx.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests/unit $< $(BUILD)/libmoe2onnx.a $(LDLIBS) -o $@

# Test helpers that damage copies of exports (tests/e2e/verify.test.sh).
$(BUILD)/tools/%: tests/tools/%.c $(BUILD)/libmoe2onnx.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< $(BUILD)/libmoe2onnx.a $(LDLIBS) -o $@
$(BUILD)/bench/%: bench/%.c $(BUILD)/libmoe2onnx.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< $(BUILD)/libmoe2onnx.a $(LDLIBS) -o $@

bench: $(BENCH_BIN)

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"

# The writer threads, the thread pool and the memory sampler share counters: TSan checks them.
tsan:
	$(MAKE) BUILD=build-tsan OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=thread"

setup:
	bash scripts/setup.sh

# The whole suite; CI runs exactly this (.ci/run).
test: setup
	$(MAKE) all
	$(MAKE) asan
	$(MAKE) tsan
	bash tests/run.sh

# Memcheck over the unit tests and small real conversions (also part of `make test`).
valgrind: all
	bash tests/valgrind.sh

# The README's first command ends here: convert a built-in synthetic checkpoint and verify it.
example: all
	rm -rf build/example
	build/moe2onnx synth --preset gpt-oss-tiny --seed 1 -o build/example/checkpoint
	build/moe2onnx -i build/example/checkpoint -o build/example/model -p int4 -e cpu
	build/moe2onnx verify -i build/example/checkpoint -o build/example/model

clean:
	rm -rf build build-asan build-tsan build-valgrind build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- fuzz: libFuzzer harnesses (fuzz/fuzz_*.c) -------------------------------------------------
#   make fuzz           builds build-fuzz/fuzz_* with clang -fsanitize=fuzzer,address,undefined
#   bash fuzz/run.sh    runs each over its seed corpus for FUZZ_SECONDS (default 20)
# The harnesses link the whole library (the config parser reaches every family's table entry,
# and through it the graph builders), compiled once with -fsanitize=fuzzer-no-link so every line
# of our code is instrumented.
FUZZ_BUILD  := build-fuzz
FUZZ_CC     ?= clang
FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS := $(CSTD) $(filter-out -Wno-format-truncation,$(WARN)) -g -O1 -fno-omit-frame-pointer \
               $(FUZZ_SAN) -pthread $(shell pkg-config --cflags $(PKGS)) -Isrc -I$(FUZZ_BUILD)/gen
FUZZ_LIBOBJ := $(patsubst src/%.c,$(FUZZ_BUILD)/obj/%.o,$(LIB_SRC)) $(FUZZ_BUILD)/obj/gen/onnx.pb-c.o
FUZZ_BIN    := $(patsubst fuzz/%.c,$(FUZZ_BUILD)/%,$(wildcard fuzz/fuzz_*.c))

fuzz: $(FUZZ_BIN)

$(FUZZ_BUILD)/gen/onnx/onnx.pb-c.c $(FUZZ_BUILD)/gen/onnx/onnx.pb-c.h &: $(ONNX_PROTO)
	@mkdir -p $(FUZZ_BUILD)/gen/onnx
	cp $(ONNX_PROTO) $(FUZZ_BUILD)/gen/onnx/onnx.proto
	cd $(FUZZ_BUILD)/gen && protoc-c --c_out=. onnx/onnx.proto

$(FUZZ_BUILD)/obj/gen/onnx.pb-c.o: $(FUZZ_BUILD)/gen/onnx/onnx.pb-c.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CSTD) -g -O1 $(shell pkg-config --cflags libprotobuf-c) -I$(FUZZ_BUILD)/gen -c $< -o $@

$(FUZZ_BUILD)/obj/%.o: src/%.c $(FUZZ_BUILD)/gen/onnx/onnx.pb-c.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/libfuzzlib.a: $(FUZZ_LIBOBJ)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_BUILD)/libfuzzlib.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_BUILD)/libfuzzlib.a $(LDLIBS) -o $@

-include $(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)
# ---- end fuzz -----------------------------------------------------------------------------------
