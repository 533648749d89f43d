# hostmem - build, test, demo.
#   make          library (build/libhostmem.a, build/libhostmem.so) and the tool
#   make demo     the main job: the tool's walk through the contract
#   make check    every test: plain, then ASan+UBSan, then TSan
CC ?= cc
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
               -Wno-missing-field-initializers -Iinclude -Isrc -pthread
OPT ?= -O2 -g
LIB_SRC := $(wildcard src/*.c)
TEST_NAMES := $(patsubst tests/%.c,%,$(wildcard tests/test_*.c))

B := build
LIB_OBJ := $(patsubst src/%.c,$(B)/obj/%.o,$(LIB_SRC))
PIC_OBJ := $(patsubst src/%.c,$(B)/pic/%.o,$(LIB_SRC))

.PHONY: all demo check check-plain check-asan check-tsan tests bench clean
all: $(B)/libhostmem.a $(B)/libhostmem.so $(B)/hostmem

$(B)/obj/%.o: src/%.c src/*.h include/hostmem.h | $(B)/obj
	$(CC) $(CFLAGS_BASE) $(OPT) -fvisibility=hidden -c $< -o $@
$(B)/pic/%.o: src/%.c src/*.h include/hostmem.h | $(B)/pic
	$(CC) $(CFLAGS_BASE) $(OPT) -fvisibility=hidden -fPIC -c $< -o $@
$(B)/libhostmem.a: $(LIB_OBJ)
	ar rcs $@ $^
$(B)/libhostmem.so: $(PIC_OBJ)
	$(CC) -shared -pthread -o $@ $^
$(B)/hostmem: tools/hostmem.c $(B)/libhostmem.a
	$(CC) $(CFLAGS_BASE) $(OPT) $< $(B)/libhostmem.a -o $@
$(B)/obj $(B)/pic $(B)/tests:
	mkdir -p $@

demo: $(B)/hostmem
	./$(B)/hostmem demo

# Tests link the static library: they may use internal seams (src/os.h).
$(B)/tests/%: tests/%.c tests/test.h $(B)/libhostmem.a | $(B)/tests
	$(CC) $(CFLAGS_BASE) $(OPT) $< $(B)/libhostmem.a -o $@
$(B)/tests/cxx_header: tests/cxx_header.cpp include/hostmem.h $(B)/libhostmem.a | $(B)/tests
	$(CXX) -std=c++11 -Wall -Wextra -Werror $(OPT) -fno-sanitize=vptr -Iinclude $< $(B)/libhostmem.a -pthread -o $@

# Real runtimes embedded over hostmem (issue 4). Each needs a Debian package; when
# it is missing (or under a sanitizer that cannot live with it) the test program is
# replaced by one that says it was skipped and why.
LUA_FLAGS := $(shell pkg-config --cflags --libs lua5.4 2>/dev/null)
SQLITE_FLAGS := $(shell pkg-config --cflags --libs sqlite3 2>/dev/null)
JEMALLOC_FLAGS := $(if $(findstring sanitize,$(OPT)),,$(shell pkg-config --cflags --libs jemalloc 2>/dev/null))
EMBED_TESTS := embed_lua embed_sqlite embed_jemalloc

define embed_rule
$(B)/tests/$(1): tests/$(1).c tests/test.h tests/skip.c $(B)/libhostmem.a | $(B)/tests
	$$(if $(2),$$(CC) $$(CFLAGS_BASE) $$(OPT) $$< $$(B)/libhostmem.a $(2) -o $$@,$$(CC) $$(CFLAGS_BASE) -DSKIPPED='"$(1)"' -DREASON='"$(3)"' tests/skip.c -o $$@)
endef
$(eval $(call embed_rule,embed_lua,$(LUA_FLAGS),package liblua5.4-dev is not installed))
$(eval $(call embed_rule,embed_sqlite,$(SQLITE_FLAGS),package libsqlite3-dev is not installed))
$(eval $(call embed_rule,embed_jemalloc,$(JEMALLOC_FLAGS),$(if $(findstring sanitize,$(OPT)),jemalloc replaces malloc and cannot run under a sanitizer,package libjemalloc-dev is not installed)))

tests: $(addprefix $(B)/tests/,$(TEST_NAMES) $(EMBED_TESTS)) $(B)/tests/cxx_header

check-plain: tests
	sh tests/run.sh plain $(B)/tests

check-asan:
	$(MAKE) --no-print-directory B=build/asan OPT="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" tests
	HOSTMEM_ITERATIONS=4000 HOSTMEM_SCALE=100000 HOSTMEM_SKIP_MAP_LIMIT=1 ASAN_OPTIONS=detect_leaks=1 sh tests/run.sh asan build/asan/tests

check-tsan:
	$(MAKE) --no-print-directory B=build/tsan OPT="-O1 -g -fsanitize=thread" tests
	HOSTMEM_ITERATIONS=2000 HOSTMEM_SCALE=100000 HOSTMEM_SKIP_MAP_LIMIT=1 TSAN_OPTIONS=halt_on_error=1 sh tests/run.sh tsan build/tsan/tests

check: all
	rm -f build/results
	$(MAKE) --no-print-directory check-plain
	$(MAKE) --no-print-directory check-asan
	$(MAKE) --no-print-directory check-tsan
	sh tests/total.sh

# Benchmarks: not tests. jemalloc and mimalloc are linked into the benchmark only.
$(B)/bench_heap: bench/bench_heap.c $(B)/libhostmem.a
	$(CC) $(CFLAGS_BASE) -O2 $< $(B)/libhostmem.a -lmimalloc -ljemalloc -o $@

bench: $(B)/bench_heap
	./$(B)/bench_heap

clean:
	rm -rf build
