#!/bin/sh
# A short deterministic libFuzzer run of every target in tests/fuzz/ as part
# of `make test`: the committed seeds and regression inputs, then
# FUZZ_TEST_RUNS (default 5000) inputs from a fixed seed, so the same tree
# always gives the same result.  One TAP line per target with its execution
# count.  `make fuzz-gate` (CI) runs more; `make test-fuzz` is the random
# campaign.  Skips, saying why, when clang or its libFuzzer runtime is not
# installed.
. "$(dirname "$0")/lib.sh"

TARGETS="wire libsvm csv idx safetensors libsvm64 criteo"
RUNS_EACH=${FUZZ_TEST_RUNS:-5000}

skip_all() {
    for t in $TARGETS; do
        skip "fuzz_$t" "$1"
    done
    exit 0
}

command -v "${FUZZ_CC:-clang}" >/dev/null 2>&1 ||
    skip_all "clang not installed (Debian: clang libclang-rt-dev)"
printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' \
    >"$TMP/probe.c"
"${FUZZ_CC:-clang}" -fsanitize=fuzzer,address,undefined -o "$TMP/probe" "$TMP/probe.c" \
    >"$TMP/probe.log" 2>&1 ||
    skip_all "clang cannot link -fsanitize=fuzzer (Debian: libclang-rt-dev)"

# The fuzz build does not depend on SAN; a clean environment keeps the
# outer make's flags (SAN=..., -j) out of this one.
if ! env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory fuzz \
    >"$TMP/build.log" 2>&1; then
    for t in $TARGETS; do
        not_ok "fuzz_$t: make fuzz failed"
    done
    sed 's/^/#   /' "$TMP/build.log" | tail -15
    exit 0
fi

for t in $TARGETS; do
    sh tests/fuzz/run.sh -g -r "$RUNS_EACH" "$t" >"$TMP/$t.out" 2>&1
    rc=$?
    line=$(head -1 "$TMP/$t.out")
    if [ $rc -eq 0 ]; then
        ok "$line"
    else
        not_ok "$line"
        tail -n +2 "$TMP/$t.out" | sed 's/^/#   /'
    fi
done
