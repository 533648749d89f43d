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
VERSION := $(shell sed -n 's/^\#define HOSTMEM_VERSION_STRING "\(.*\)"/\1/p' include/hostmem.h)
SOVERSION := $(firstword $(subst ., ,$(VERSION)))

B := build
LIB_OBJ := $(patsubst src/%.c,$(B)/obj/%.o,$(LIB_SRC))
PIC_OBJ := $(patsubst src/%.c,$(B)/pic/%.o,$(LIB_SRC))

.PHONY: all demo check check-plain check-asan check-tsan tests bench clean install uninstall
all: $(B)/libhostmem.a $(B)/libhostmem.so $(B)/hostmem

$(B)/obj/%.o: src/%.c src/*.h include/hostmem.h | $(B)/obj
	$(CC) $(CFLAGS_BASE) $(OPT) -fvisibility=hidden -c $< -o $@
$(B)/pic/%.o: src/%.c src/*.h include/hostmem.h | $(B)/pic
	$(CC) $(CFLAGS_BASE) $(OPT) -fvisibility=hidden -fPIC -c $< -o $@
$(B)/libhostmem.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^
# The shared library carries the soname libhostmem.so.$(SOVERSION) (make install
# adds the versioned file and the links); build/libhostmem.so.$(SOVERSION) points at
# build/libhostmem.so so that programs linked against the build tree run with
# LD_LIBRARY_PATH=build.
$(B)/libhostmem.so: $(PIC_OBJ)
	$(CC) -shared -pthread -Wl,-soname,libhostmem.so.$(SOVERSION) -o $@ $^
	ln -sf libhostmem.so $(B)/libhostmem.so.$(SOVERSION)
# The tool includes the benchmark (`hostmem bench`) without the peer allocators:
# bench/*.c built again with HOSTMEM_BENCH_IN_TOOL into $(B)/bench-tool, main()
# renamed hostmem_bench_main.
BENCH_SRC := $(wildcard bench/*.c)
BENCH_TOOL_OBJ := $(patsubst bench/%.c,$(B)/bench-tool/%.o,$(BENCH_SRC))
$(B)/bench-tool/%.o: bench/%.c $(wildcard bench/*.h) include/hostmem.h | $(B)/bench-tool
	$(CC) $(CFLAGS_BASE) $(OPT) -DHOSTMEM_BENCH_IN_TOOL -Dmain=hostmem_bench_main -c $< -o $@
$(B)/hostmem: $(wildcard tools/*.c) tools/cli.h $(BENCH_TOOL_OBJ) $(B)/libhostmem.a
	$(CC) $(CFLAGS_BASE) $(OPT) $(wildcard tools/*.c) $(BENCH_TOOL_OBJ) $(B)/libhostmem.a -lm -o $@
$(B)/obj $(B)/pic $(B)/tests $(B)/bench-tool:
	mkdir -p $@

demo: $(B)/hostmem
	./$(B)/hostmem demo

# Tests link the static library: they may use internal seams (src/os.h).
$(B)/tests/%: tests/%.c tests/test.h $(B)/libhostmem.a | $(B)/tests
	$(CC) $(CFLAGS_BASE) $(OPT) $< $(B)/libhostmem.a -o $@
$(B)/tests/cxx_header: tests/cxx_header.cpp include/hostmem.h $(B)/libhostmem.a | $(B)/tests
	$(CXX) -std=c++11 -Wall -Wextra -Werror $(OPT) -fno-sanitize=vptr -Iinclude $< $(B)/libhostmem.a -pthread -o $@

# Real runtimes embedded over hostmem. Each needs a Debian package; when
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

# Real runtimes built from Debian's source packages on hostmem's VM calls (pcre2
# through the Win32 face, libhostmem_win32): integrations/NAME/run.sh fetches
# (apt-get source), patches, builds and runs them; tests/integration.sh adds up
# what it reports. Without the sources they say so in one line and count
# nothing, unless HOSTMEM_REQUIRE_INTEGRATIONS=1 (CI).
INTEGRATIONS := mimalloc luajit pcre2 libffi bdwgc
INTEGRATION_TESTS := $(addprefix $(B)/integration-test/integration_,$(INTEGRATIONS))
$(B)/integration-test/integration_%: tests/integration.sh $(B)/libhostmem.a $(B)/libhostmem_win32.a
	mkdir -p $(@D)
	printf '#!/bin/sh\nexec sh "%s/tests/integration.sh" "%s" "%s/$(B)"\n' "$(CURDIR)" "$*" "$(CURDIR)" > $@
	chmod +x $@
# libffi is a shared library: it and the programs of its test suite reach the
# one manager of the shared libhostmem_win32.
$(B)/integration-test/integration_libffi: $(B)/libhostmem.so $(B)/libhostmem_win32.so

# After the C tests: tests/test_install.sh installs into a temporary prefix and a
# DESTDIR stage and builds programs against them through pkg-config and through
# CMake's find_package(hostmem). tests/run.sh runs it (and records its counts in
# build/results) through a one-line wrapper in $(B)/install-test.
check-plain: tests $(B)/install-test/test_install $(B)/cli-test/test_cli $(B)/fuzz-test/fuzz_corpus $(B)/layers-test/test_layers $(B)/docs-test/test_docs $(INTEGRATION_TESTS)
	sh tests/run.sh plain $(B)/tests
	sh tests/run.sh plain $(B)/layers-test
	sh tests/run.sh plain $(B)/docs-test
	sh tests/run.sh plain $(B)/integration-test
	MAKE="$(MAKE)" sh tests/run.sh plain $(B)/install-test
	sh tests/run.sh plain $(B)/cli-test
	sh tests/run.sh plain $(B)/fuzz-test
# tests/test_cli.sh drives the tool built in $(B) (plain, and under ASan+UBSan).
$(B)/cli-test/test_cli: tests/test_cli.sh $(B)/hostmem
	mkdir -p $(@D)
	printf '#!/bin/sh\nexec sh "%s/tests/test_cli.sh" "%s/$(B)/hostmem"\n' "$(CURDIR)" "$(CURDIR)" > $@
	chmod +x $@
# tests/test_docs.sh checks README.md and docs/ against the tree, the library and the tool
# built in $(B): snippets compiled and run, commands run, names found.
$(B)/docs-test/test_docs: tests/test_docs.sh $(B)/hostmem $(B)/libhostmem.a $(B)/libhostmem_win32.a
	mkdir -p $(@D)
	printf '#!/bin/sh\nexec sh "%s/tests/test_docs.sh" "%s/$(B)"\n' "$(CURDIR)" "$(CURDIR)" > $@
	chmod +x $@
# tests/test_layers.sh checks that the library's calls point down its layers.
$(B)/layers-test/test_layers: tests/test_layers.sh $(B)/libhostmem.a
	mkdir -p $(@D)
	printf '#!/bin/sh\nexec sh "%s/tests/test_layers.sh" "%s/$(B)/obj"\n' "$(CURDIR)" "$(CURDIR)" > $@
	chmod +x $@
$(B)/install-test/test_install: tests/test_install.sh
	mkdir -p $(@D)
	printf '#!/bin/sh\nexec sh "%s/tests/test_install.sh" "$$@"\n' "$(CURDIR)" > $@
	chmod +x $@

# The fuzz target without libFuzzer: tests/fuzz_main.c replays every file of
# tests/fuzz_corpus once (a regression test; make fuzz explores).
$(B)/fuzz-test/fuzz_corpus: tests/fuzz_main.c tests/fuzz_model.c $(B)/libhostmem.a
	mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) $(OPT) -DFUZZ_CORPUS_DIR='"$(CURDIR)/tests/fuzz_corpus"' tests/fuzz_main.c tests/fuzz_model.c $(B)/libhostmem.a -o $@

# The sanitizer builds also turn on hostmem's own assertions (src/internal.h).
ASSERTS := -DHOSTMEM_ASSERT=2
check-asan:
	$(MAKE) --no-print-directory B=build/asan OPT="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer $(ASSERTS)" tests build/asan/cli-test/test_cli
	HOSTMEM_ITERATIONS=4000 HOSTMEM_SCALE=100000 HOSTMEM_SKIP_MAP_LIMIT=1 ASAN_OPTIONS=detect_leaks=1 sh tests/run.sh asan build/asan/tests
	ASAN_OPTIONS=detect_leaks=1 sh tests/run.sh asan build/asan/cli-test

check-tsan:
	$(MAKE) --no-print-directory B=build/tsan OPT="-O1 -g -fsanitize=thread $(ASSERTS)" tests
	HOSTMEM_ITERATIONS=2000 HOSTMEM_SCALE=100000 HOSTMEM_SKIP_MAP_LIMIT=1 TSAN_OPTIONS=halt_on_error=1 sh tests/run.sh tsan build/tsan/tests

# make fuzz [FUZZ_SECONDS=120]: tests/fuzz_model.c under libFuzzer with ASan+UBSan
# (clang and its compiler runtime: libclang-rt-MAJOR-dev for the installed clang's
# major version), seeded from tests/fuzz_corpus; new inputs go to build/fuzz/corpus,
# findings to build/fuzz/ (crash-*, timeout-*), and fail the target. First
# tests/fuzz_probe.sh checks that FUZZ_CC can link a fuzzer at all, and says what
# to install if not.
.PHONY: fuzz
FUZZ_SECONDS ?= 120
FUZZ_CC ?= clang
FUZZ_FLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_OBJ := $(patsubst src/%.c,build/fuzz/obj/%.o,$(LIB_SRC))
build/fuzz/probe: tests/fuzz_probe.sh
	sh tests/fuzz_probe.sh $(FUZZ_CC) build/fuzz
build/fuzz/obj/%.o: src/%.c src/*.h include/hostmem.h | build/fuzz/probe
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CFLAGS_BASE) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -fvisibility=hidden -c $< -o $@
build/fuzz/fuzz_model: tests/fuzz_model.c $(FUZZ_OBJ) | build/fuzz/probe
	$(FUZZ_CC) $(CFLAGS_BASE) $(FUZZ_FLAGS) -fsanitize=fuzzer tests/fuzz_model.c $(FUZZ_OBJ) -o $@
fuzz: build/fuzz/fuzz_model
	mkdir -p build/fuzz/corpus
	./build/fuzz/fuzz_model -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 \
	    -artifact_prefix=build/fuzz/ build/fuzz/corpus tests/fuzz_corpus

check: all
	rm -f build/results
	$(MAKE) --no-print-directory check-plain
	$(MAKE) --no-print-directory check-asan
	$(MAKE) --no-print-directory check-tsan
	sh tests/total.sh

# Benchmarks: not tests, never run by make check. jemalloc and mimalloc
# are linked into the benchmark only. make bench [BENCH_ARGS=--quick|--json] writes
# docs/bench.svg; build/bench --help lists the options. Then mimalloc's stress test
# on hostmem against stock mimalloc (integrations/mimalloc/bench.sh,
# BENCH_RUNS=5, BENCH_THREADS="4 8 32", BENCH_COMPACT=1 for compact mode too).
$(B)/bench: $(BENCH_SRC) $(wildcard bench/*.h) $(B)/libhostmem.a
	$(CC) $(CFLAGS_BASE) -O2 $(BENCH_SRC) $(B)/libhostmem.a -lmimalloc -ljemalloc -lpthread -lm -o $@

bench: $(B)/bench
	./$(B)/bench --svg docs/bench.svg $(BENCH_ARGS)
	sh integrations/mimalloc/bench.sh $(B)
	sh integrations/bdwgc/bench.sh $(B)

clean:
	rm -rf build

# make install [PREFIX=/usr/local] [DESTDIR=...]: the libraries (libhostmem.so.$(VERSION)
# with the links libhostmem.so.$(SOVERSION) and libhostmem.so), the header, hostmem.pc
# (from hostmem.pc.in), the CMake package (from cmake/*.in: find_package(hostmem)
# gives hostmem::hostmem and hostmem::hostmem_static), the tool and its man page.
# DESTDIR stages the files elsewhere; the paths written into hostmem.pc stay those
# of PREFIX, and the CMake package finds its files from its own place (so does a
# moved or staged tree) whenever CMAKEDIR, LIBDIR and INCLUDEDIR are under PREFIX.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
CMAKEDIR ?= $(LIBDIR)/cmake/hostmem
INSTALL ?= install

# The CMake package's paths: CMAKEDIR's way up to PREFIX (lib/cmake/hostmem ->
# ../../..), and the library and include directories from there; absolute
# paths when a directory is not under PREFIX.
empty :=
space := $(empty) $(empty)
CMAKE_UP := $(if $(filter $(PREFIX)/%,$(CMAKEDIR)),$(subst $(space),/,$(patsubst %,..,$(subst /, ,$(patsubst $(PREFIX)/%,%,$(CMAKEDIR))))))
CMAKE_PREFIX_LINE := $(if $(CMAKE_UP),get_filename_component(_hostmem_prefix "$${CMAKE_CURRENT_LIST_DIR}/$(CMAKE_UP)" ABSOLUTE),set(_hostmem_prefix "$(PREFIX)"))
cmake_path = $(if $(CMAKE_UP),$(patsubst $(PREFIX)/%,$${_hostmem_prefix}/%,$(1)),$(1))
CMAKE_SED := -e 's|@PREFIX_LINE@|$(CMAKE_PREFIX_LINE)|' -e 's|@LIBDIR@|$(call cmake_path,$(LIBDIR))|g' \
             -e 's|@INCLUDEDIR@|$(call cmake_path,$(INCLUDEDIR))|g' -e 's|@VERSION@|$(VERSION)|g' \
             -e 's|@SOVERSION@|$(SOVERSION)|g'

install: all
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|g' \
	    -e 's|@INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|g' \
	    -e 's|@VERSION@|$(VERSION)|g' hostmem.pc.in > $(B)/hostmem.pc
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 644 $(B)/libhostmem.a $(DESTDIR)$(LIBDIR)/libhostmem.a
	$(INSTALL) -m 755 $(B)/libhostmem.so $(DESTDIR)$(LIBDIR)/libhostmem.so.$(VERSION)
	ln -sf libhostmem.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libhostmem.so.$(SOVERSION)
	ln -sf libhostmem.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libhostmem.so
	$(INSTALL) -m 644 include/hostmem.h $(DESTDIR)$(INCLUDEDIR)/hostmem.h
	$(INSTALL) -m 644 $(B)/hostmem.pc $(DESTDIR)$(PKGCONFIGDIR)/hostmem.pc
	sed $(CMAKE_SED) cmake/hostmem-config.cmake.in > $(B)/hostmem-config.cmake
	sed $(CMAKE_SED) cmake/hostmem-config-version.cmake.in > $(B)/hostmem-config-version.cmake
	$(INSTALL) -d $(DESTDIR)$(CMAKEDIR)
	$(INSTALL) -m 644 $(B)/hostmem-config.cmake $(B)/hostmem-config-version.cmake $(DESTDIR)$(CMAKEDIR)
	$(INSTALL) -m 755 $(B)/hostmem $(DESTDIR)$(BINDIR)/hostmem
	$(INSTALL) -m 644 docs/hostmem.1 $(DESTDIR)$(MANDIR)/man1/hostmem.1

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libhostmem.a $(DESTDIR)$(LIBDIR)/libhostmem.so.$(VERSION) \
	    $(DESTDIR)$(LIBDIR)/libhostmem.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libhostmem.so \
	    $(DESTDIR)$(INCLUDEDIR)/hostmem.h $(DESTDIR)$(PKGCONFIGDIR)/hostmem.pc \
	    $(DESTDIR)$(BINDIR)/hostmem $(DESTDIR)$(MANDIR)/man1/hostmem.1 \
	    $(DESTDIR)$(CMAKEDIR)/hostmem-config.cmake $(DESTDIR)$(CMAKEDIR)/hostmem-config-version.cmake
	if [ -d $(DESTDIR)$(CMAKEDIR) ]; then rmdir $(DESTDIR)$(CMAKEDIR) 2>/dev/null || true; fi

# The Win32 face (docs/win32.md): VirtualAlloc, VirtualFree, VirtualQuery,
# VirtualProtect, GetWriteWatch, ResetWriteWatch, GetLargePageMinimum and the thread's
# last error, with Windows' results, over one process-wide manager. Its own libraries
# (build/libhostmem_win32.a, .so), so that only a program that asks gets these global
# names; a user of the public API like integrations/, so built without -Isrc.
WIN32_CFLAGS := $(filter-out -Isrc,$(CFLAGS_BASE))
.PHONY: install-win32 uninstall-win32
all: $(B)/libhostmem_win32.a $(B)/libhostmem_win32.so
$(B)/win32/obj/%.o: win32/%.c include/hostmem_win32.h include/hostmem.h
	@mkdir -p $(@D)
	$(CC) $(WIN32_CFLAGS) $(OPT) -fvisibility=hidden -c $< -o $@
$(B)/win32/pic/%.o: win32/%.c include/hostmem_win32.h include/hostmem.h
	@mkdir -p $(@D)
	$(CC) $(WIN32_CFLAGS) $(OPT) -fvisibility=hidden -fPIC -c $< -o $@
$(B)/libhostmem_win32.a: $(B)/win32/obj/hostmem_win32.o
	rm -f $@
	ar rcs $@ $^
# Its RUNPATH, $ORIGIN, finds libhostmem.so.$(SOVERSION) beside it wherever the two are
# installed: a program's own rpath does not reach a library's dependencies.
$(B)/libhostmem_win32.so: $(B)/win32/pic/hostmem_win32.o $(B)/libhostmem.so
	$(CC) -shared -pthread -Wl,-soname,libhostmem_win32.so.$(SOVERSION) -Wl,-rpath,'$$ORIGIN' -o $@ $< -L$(B) -lhostmem
	ln -sf libhostmem_win32.so $(B)/libhostmem_win32.so.$(SOVERSION)
# tests/test_win32.c includes hostmem_win32.h alone, as a ported program does.
$(B)/tests/test_win32: tests/test_win32.c include/hostmem_win32.h $(B)/libhostmem_win32.a $(B)/libhostmem.a | $(B)/tests
	$(CC) $(WIN32_CFLAGS) $(OPT) $< $(B)/libhostmem_win32.a $(B)/libhostmem.a -o $@
# tests/test_win32_code.c: the face's dynamic-code policy, seen by a host that also
# uses hostmem.h (tests/test.h): both libraries.
$(B)/tests/test_win32_code: tests/test_win32_code.c tests/test.h include/hostmem_win32.h $(B)/libhostmem_win32.a $(B)/libhostmem.a | $(B)/tests
	$(CC) $(CFLAGS_BASE) $(OPT) $< $(B)/libhostmem_win32.a $(B)/libhostmem.a -o $@
# tests/test_win32_modes.c: the face's guard-page and emulated write-watch modes, the same way.
$(B)/tests/test_win32_modes: tests/test_win32_modes.c tests/test.h include/hostmem_win32.h $(B)/libhostmem_win32.a $(B)/libhostmem.a | $(B)/tests
	$(CC) $(CFLAGS_BASE) $(OPT) $< $(B)/libhostmem_win32.a $(B)/libhostmem.a -o $@

install: install-win32
install-win32: $(B)/libhostmem_win32.a $(B)/libhostmem_win32.so
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|g' \
	    -e 's|@INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|g' \
	    -e 's|@VERSION@|$(VERSION)|g' win32/hostmem-win32.pc.in > $(B)/hostmem-win32.pc
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 644 $(B)/libhostmem_win32.a $(DESTDIR)$(LIBDIR)/libhostmem_win32.a
	$(INSTALL) -m 755 $(B)/libhostmem_win32.so $(DESTDIR)$(LIBDIR)/libhostmem_win32.so.$(VERSION)
	ln -sf libhostmem_win32.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libhostmem_win32.so.$(SOVERSION)
	ln -sf libhostmem_win32.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libhostmem_win32.so
	$(INSTALL) -m 644 include/hostmem_win32.h $(DESTDIR)$(INCLUDEDIR)/hostmem_win32.h
	$(INSTALL) -m 644 $(B)/hostmem-win32.pc $(DESTDIR)$(PKGCONFIGDIR)/hostmem-win32.pc
uninstall: uninstall-win32
uninstall-win32:
	rm -f $(DESTDIR)$(LIBDIR)/libhostmem_win32.a $(DESTDIR)$(LIBDIR)/libhostmem_win32.so.$(VERSION) \
	    $(DESTDIR)$(LIBDIR)/libhostmem_win32.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libhostmem_win32.so \
	    $(DESTDIR)$(INCLUDEDIR)/hostmem_win32.h $(DESTDIR)$(PKGCONFIGDIR)/hostmem-win32.pc
