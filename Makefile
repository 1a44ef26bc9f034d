# ps: a momentum-SGD parameter server (MPI control plane, libzmq data plane).
#
#   make            build bin/ps-server, bin/ps-worker and build/libpsclient.so
#                   (python/psclient loads it: PYTHONPATH=python)
#   make run        install missing deps, build, train the MLP on Fashion-MNIST
#   make test       install missing deps, build, run unit + integration tests
#   make bench      install missing deps, build, run the benchmarks
#   make deps       install the Debian packages the project needs
#   make SAN=address,undefined test   sanitizer build in its own folder
#   make SAN=thread test   ThreadSanitizer (alone: it cannot be combined
#                   with address); tests/tsan.supp for third-party code
#   make fuzz-gate  build the libFuzzer targets (clang) into build/fuzz and
#                   run each deterministically (fixed seed and run count)
#                   over the committed corpus: the CI gate
#   make test-fuzz  a random campaign: each target for FUZZ_SECONDS
#                   (default 20), growing build/fuzz/corpus
#   make format     clang-format every C file in place (.clang-format)
#   make format-check  fail, listing the files, when any C file differs
#                   from clang-format's output (CI runs it)
#   make install PREFIX=/usr/local   ps.h, libpsclient, psclient.pc, the two
#                   programs, their man pages and the Python package
#                   psclient (prints the PYTHONPATH to use; `make uninstall`
#                   undoes it)
#
# Flags come from pkg-config; objects go to $(BUILD).

CC ?= gcc
PKGS := ompi-c libzmq openblas zlib inih jansson
SAN ?=
# Before its first use: BUILD below is expanded immediately.
comma := ,

ifeq ($(SAN),)
BUILD := build
SANFLAGS :=
else
BUILD := build/san-$(subst $(comma),-,$(SAN))
SANFLAGS := -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

# Without pkg-config or the packages, these stay empty and the deps check in
# `make run/test/bench` installs them first.
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

WERROR ?=
CFLAGS ?= -O2 -g
# -ffp-contract=off: the optimizer's rounding is spelled out with fmaf; the
# compiler must not fuse anything else (bitwise agreement with PyTorch).
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra $(WERROR) -ffp-contract=off \
	-fno-strict-aliasing -Icommon -Iserver -Iworker $(PKG_CFLAGS) $(SANFLAGS) $(CFLAGS)
ALL_LDFLAGS := $(SANFLAGS) $(LDFLAGS)
LIBS := $(PKG_LIBS) -lm -lpthread

MAINS := server/srv_main.c worker/wkr_main.c
LIB_SRC := $(filter-out $(MAINS),$(wildcard common/*.c server/*.c worker/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOL_BIN := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)
BENCH_SRC := $(wildcard tests/bench/*.c)
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)

ifeq ($(SAN),)
BINDIR := bin
else
BINDIR := $(BUILD)/bin
endif
BINS := $(BINDIR)/ps-server $(BINDIR)/ps-worker

.PHONY: all deps run test unit bench clean check-deps test-cluster plot fuzz test-fuzz fuzz-gate \
	format format-check
all: $(BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libps.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BINDIR)/ps-server: $(BUILD)/obj/server/srv_main.o $(BUILD)/libps.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BINDIR)/ps-worker: $(BUILD)/obj/worker/wkr_main.o $(BUILD)/libps.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libps.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libps.a $(ALL_LDFLAGS) $(CMOCKA_LIBS) $(LIBS)

$(BUILD)/tools/%: tests/tools/%.c $(BUILD)/libps.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libps.a $(ALL_LDFLAGS) $(LIBS)

$(BUILD)/bench/%: tests/bench/%.c $(BUILD)/libps.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libps.a $(ALL_LDFLAGS) $(LIBS)

deps:
	sh deploy/install-deps.sh

# Installs only when something is missing, so repeated runs stay quick.
check-deps:
	@sh deploy/install-deps.sh --if-missing

unit: $(UNIT_BIN) $(TOOL_BIN)

# The benchmarks are built (not run) too, so an API change cannot leave
# them broken until the next `make bench`.
test: check-deps
	@$(MAKE) --no-print-directory all unit $(BENCH_BIN) SAN=$(SAN)
	@BUILD=$(BUILD) BINDIR=$(BINDIR) sh tests/run.sh

# Loss/accuracy curves from a metrics file: make plot METRICS=m.jsonl [PLOT=out.png]
METRICS ?=
PLOT ?= $(basename $(METRICS)).png
plot: all
	@test -n "$(METRICS)" || { echo "usage: make plot METRICS=path/to/metrics.jsonl [PLOT=out.png]" >&2; exit 2; }
	$(BINDIR)/ps-worker --plot-metrics "$(METRICS)" --plot "$(PLOT)"
	@echo "plot: $(PLOT)"

# Multi-host jobs on network-namespace test hosts (root and `ip netns`
# needed; says why it skipped otherwise).  Also part of `make test`.
test-cluster: check-deps
	@$(MAKE) --no-print-directory all unit
	@BUILD=$(BUILD) BINDIR=$(BINDIR) TESTS=test_cluster sh tests/run.sh

bench: check-deps
	@$(MAKE) --no-print-directory all $(BENCH_BIN) $(TOOL_BIN)
	@BUILD=$(BUILD) sh tests/bench/run.sh

# On a terminal the workers draw the progress bar; the run folder's log.txt
# keeps the plain per-epoch lines either way (deploy/run-fmnist.sh).
run: check-deps
	@$(MAKE) --no-print-directory all SAN=$(SAN)
	@BINDIR=$(BINDIR) sh deploy/run-fmnist.sh

clean:
	rm -rf build bin

# Every C source and header of the project (not build output).
FORMAT_FILES := $(wildcard common/*.[ch] server/*.[ch] worker/*.[ch] examples/*.[ch] \
	tests/*/*.[ch])
format: check-deps
	clang-format -i $(FORMAT_FILES)

format-check: check-deps
	@out=$$(clang-format --dry-run $(FORMAT_FILES) 2>&1 | grep 'warning:' | cut -d: -f1 | \
		sort | uniq -c); \
	if [ -n "$$out" ]; then \
		echo "format-check: these files differ from clang-format (run make format):"; \
		echo "$$out"; exit 1; \
	fi; echo "format-check: $(words $(FORMAT_FILES)) files match .clang-format"

# libFuzzer targets (tests/fuzz/): clang only, with ASan and UBSan, the
# code under test compiled here with coverage instrumentation (not the gcc
# objects of libps.a).  Independent of SAN.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 20
FUZZ := build/fuzz
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra $(WERROR) -ffp-contract=off \
	-fno-strict-aliasing -Icommon -Iserver -Iworker -O1 -g -fno-omit-frame-pointer \
	-fsanitize=address,undefined -fno-sanitize-recover=all \
	$(shell pkg-config --cflags jansson 2>/dev/null)
FUZZ_LIBS := $(shell pkg-config --libs zlib jansson 2>/dev/null || echo -lz -ljansson) -lm
FUZZ_TARGETS := wire libsvm csv idx safetensors libsvm64 criteo
FUZZ_BIN := $(FUZZ_TARGETS:%=$(FUZZ)/fuzz_%)
fuzz_obj = $(patsubst %.c,$(FUZZ)/obj/%.o,$(1))
FUZZ_DATA_SRC := worker/wkr_data.c worker/wkr_data_shard.c worker/wkr_data_text.c worker/wkr_lines.c \
	worker/wkr_data_idx.c
FUZZ_DATA_OBJ := $(call fuzz_obj,$(FUZZ_DATA_SRC) common/ps_err.c)
FUZZ_SPARSE_SRC := worker/wkr_data_sparse.c worker/wkr_data_libsvm64.c worker/wkr_data_criteo.c \
	worker/wkr_data_shard.c worker/wkr_lines.c
FUZZ_SPARSE_OBJ := $(call fuzz_obj,$(FUZZ_SPARSE_SRC) common/ps_err.c)
FUZZ_OBJ := $(call fuzz_obj,$(FUZZ_TARGETS:%=tests/fuzz/fuzz_%.c) common/ps_wire.c \
	common/ps_keys.c common/ps_layout.c common/ps_err.c common/ps_safetensors.c common/ps_atomic.c \
	common/ps_cleanup.c $(FUZZ_DATA_SRC) $(FUZZ_SPARSE_SRC))

$(FUZZ)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ)/fuzz_%: $(FUZZ)/obj/tests/fuzz/fuzz_%.o
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(FUZZ_LIBS)

$(FUZZ)/fuzz_wire: $(call fuzz_obj,common/ps_wire.c common/ps_layout.c common/ps_err.c \
	common/ps_keys.c)
$(FUZZ)/fuzz_libsvm $(FUZZ)/fuzz_csv $(FUZZ)/fuzz_idx: $(FUZZ_DATA_OBJ)
$(FUZZ)/fuzz_libsvm64 $(FUZZ)/fuzz_criteo: $(FUZZ_SPARSE_OBJ)
$(FUZZ)/fuzz_safetensors: $(call fuzz_obj,common/ps_safetensors.c common/ps_atomic.c \
	common/ps_cleanup.c common/ps_layout.c common/ps_err.c)

# Keep the objects of the chained pattern rules for incremental rebuilds.
.SECONDARY: $(FUZZ_OBJ)

fuzz: $(FUZZ_BIN)

test-fuzz: check-deps
	@$(MAKE) --no-print-directory fuzz
	@FUZZ=$(FUZZ) sh tests/fuzz/run.sh -t $(FUZZ_SECONDS)

fuzz-gate: check-deps
	@$(MAKE) --no-print-directory fuzz
	@FUZZ=$(FUZZ) sh tests/fuzz/run.sh -g

-include $(LIB_OBJ:.o=.d) $(BUILD)/obj/server/srv_main.d $(BUILD)/obj/worker/wkr_main.d
-include $(FUZZ_OBJ:.o=.d)

# libpsclient: the client library for custom workers (worker/ps.h,
# docs/api.md), and installing everything.
#   make lib          $(BUILD)/libpsclient.a and libpsclient.so (-fPIC
#                     objects in $(BUILD)/pic)
#   make examples     examples/ built against the build tree
#   make install      PREFIX (default /usr/local) and DESTDIR: ps.h,
#                     libpsclient.{a,so}, psclient.pc, ps-server, ps-worker,
#                     their man pages and python/psclient into PYDIR
#                     (default PREFIX/lib/python3/dist-packages);
#                     `make uninstall` removes them
PREFIX ?= /usr/local
PS_VERSION := $(shell sed -n 's/^\#define PS_VERSION_STRING "\(.*\)"/\1/p' common/ps_opts.h)
PSC_SONAME := libpsclient.so.$(firstword $(subst ., ,$(PS_VERSION)))
PSC_SO := $(BUILD)/libpsclient.so.$(PS_VERSION)
# ps_opts (flags and INI files, libinih) belongs to the two binaries.
PSC_SRC := $(wildcard worker/ps_*.c) worker/wkr_client.c worker/wkr_arrays.c $(filter-out common/ps_opts.c,$(wildcard common/*.c))
PSC_OBJ := $(PSC_SRC:%.c=$(BUILD)/obj/%.o)
PSC_PIC_OBJ := $(PSC_SRC:%.c=$(BUILD)/pic/%.o)
PSC_DEP_LIBS := $(shell pkg-config --libs ompi-c libzmq jansson 2>/dev/null) -lm -lpthread
INST_LIB := $(DESTDIR)$(PREFIX)/lib
INST_MAN := $(DESTDIR)$(PREFIX)/share/man/man1
# The Python package (python/psclient): PYTHONPATH=$(PYDIR) imports it.
PYDIR ?= $(PREFIX)/lib/python3/dist-packages
PY_FILES := __init__.py torch.py
INSTALLED := $(DESTDIR)$(PREFIX)/include/ps.h $(INST_LIB)/libpsclient.a \
	$(INST_LIB)/libpsclient.so $(INST_LIB)/$(PSC_SONAME) $(INST_LIB)/libpsclient.so.$(PS_VERSION) \
	$(INST_LIB)/pkgconfig/psclient.pc $(DESTDIR)$(PREFIX)/bin/ps-server \
	$(DESTDIR)$(PREFIX)/bin/ps-worker $(INST_MAN)/ps-server.1 $(INST_MAN)/ps-worker.1

.PHONY: lib examples install uninstall
lib: $(BUILD)/libpsclient.a $(PSC_SO)
# `make` builds the shared library too: python/psclient loads it from the
# build tree (PYTHONPATH=python).
all: $(PSC_SO)

$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fPIC -MMD -MP -c $< -o $@

$(BUILD)/libpsclient.a: $(PSC_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The shared library exports ps.h's functions and nothing else.
$(BUILD)/psclient.map: worker/ps.h
	@mkdir -p $(dir $@)
	{ echo '{ global:'; sed -n 's/^[a-z].*[ *]\(ps_[a-z_]*\)(.*/  \1;/p' $<; \
	  echo 'local: *; };'; } >$@

$(PSC_SO): $(PSC_PIC_OBJ) $(BUILD)/psclient.map
	$(CC) -shared $(ALL_LDFLAGS) -Wl,-soname,$(PSC_SONAME) -Wl,--no-undefined \
		-Wl,--version-script,$(BUILD)/psclient.map -o $@ $(PSC_PIC_OBJ) $(PSC_DEP_LIBS)
	ln -sf libpsclient.so.$(PS_VERSION) $(BUILD)/$(PSC_SONAME)
	ln -sf $(PSC_SONAME) $(BUILD)/libpsclient.so

$(BUILD)/examples/%: examples/%.c $(BUILD)/libpsclient.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libpsclient.a $(ALL_LDFLAGS) $(PSC_DEP_LIBS)

examples: $(patsubst examples/%.c,$(BUILD)/examples/%,$(wildcard examples/*.c))

install: all lib
	install -d $(DESTDIR)$(PREFIX)/include $(INST_LIB)/pkgconfig $(DESTDIR)$(PREFIX)/bin \
		$(INST_MAN)
	install -m 644 worker/ps.h $(DESTDIR)$(PREFIX)/include/ps.h
	install -m 644 $(BUILD)/libpsclient.a $(INST_LIB)/libpsclient.a
	install -m 755 $(PSC_SO) $(INST_LIB)/libpsclient.so.$(PS_VERSION)
	ln -sf libpsclient.so.$(PS_VERSION) $(INST_LIB)/$(PSC_SONAME)
	ln -sf $(PSC_SONAME) $(INST_LIB)/libpsclient.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(PS_VERSION)|' \
		-e 's|@LIBS_PRIVATE@|$(PSC_DEP_LIBS)|' deploy/psclient.pc.in \
		>$(INST_LIB)/pkgconfig/psclient.pc
	install -m 755 $(BINDIR)/ps-server $(BINDIR)/ps-worker $(DESTDIR)$(PREFIX)/bin/
	install -m 644 docs/man/ps-server.1 docs/man/ps-worker.1 $(INST_MAN)/
	install -d $(DESTDIR)$(PYDIR)/psclient
	install -m 644 $(PY_FILES:%=python/psclient/%) $(DESTDIR)$(PYDIR)/psclient/
	printf '# Written by make install: the library this package loads.\nLIBRARY = "%s"\n' \
		'$(PREFIX)/lib/$(PSC_SONAME)' >$(DESTDIR)$(PYDIR)/psclient/_install.py
	@echo "psclient (Python): export PYTHONPATH=$(PYDIR)  (torch/numpy: /usr/bin/python3)"

uninstall:
	rm -f $(INSTALLED)
	rm -rf $(DESTDIR)$(PYDIR)/psclient

-include $(PSC_PIC_OBJ:.o=.d)
