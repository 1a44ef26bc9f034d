#!/bin/sh
# The test harness behind `make test`: runs every unit-test binary (cmocka,
# TAP output) and every integration test (tests/integration/test_*.sh and
# test_*.py, TAP output), counts the results and closes with one line
#   N passed, M failed, K skipped
# Exit status: 0 when nothing failed.
#
# Environment: BUILD (build folder, default build), BINDIR (binaries,
# default bin), TESTS (a pattern to run a subset, e.g. TESTS=equiv), SUITE
# (unit or integration: only those; default both).
set -u
BUILD=${BUILD:-build}
BINDIR=${BINDIR:-bin}
export BUILD BINDIR

# Sanitizer builds (make SAN=address,undefined test): settings for every
# binary the tests start, directly or through mpirun (which passes its
# environment on).  Inert for binaries built without sanitizers.  Later
# entries win, so options already in the caller's environment go last.
#   fast_unwind_on_malloc=0  whole allocation stacks through system
#       libraries, so tests/lsan.supp can match Open MPI's and libzmq's
#       exit-time leaks by library name; detect_leaks stays on for ours
ASAN_OPTIONS="detect_leaks=1:fast_unwind_on_malloc=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
LSAN_OPTIONS="suppressions=$(cd "$(dirname "$0")" && pwd)/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
#   ThreadSanitizer (make SAN=thread): the first race ends the program, so
#       it fails its test; tests/tsan.supp names only third-party libraries
#       (not instrumented, so their hand-overs between threads look like
#       races)
TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$(cd "$(dirname "$0")" && pwd)/tsan.supp${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
export ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS
pass=0 fail=0 skip=0
failed_names=""
log_dir="$BUILD/test-logs"
mkdir -p "$log_dir"

# Count TAP lines of one test program's output; a program that exits
# non-zero without reporting a failure counts as one failure.
count() {
    name=$1 out=$2 status=$3
    p=$(grep -c '^ok ' "$out" | tr -d ' ')
    s=$(grep -c '^ok .*# *SKIP' "$out" | tr -d ' ')
    f=$(grep -c '^not ok ' "$out" | tr -d ' ')
    p=$((p - s))
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "not ok - $name exited with status $status" >>"$out"
    fi
    if [ $((p + f + s)) -eq 0 ]; then
        f=1
        echo "not ok - $name reported no results" >>"$out"
    fi
    pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
    if [ "$f" -gt 0 ]; then
        failed_names="$failed_names $name"
        grep -E '^not ok|^# ' "$out" | sed "s|^|    $name: |" | head -40
    fi
    grep '# *SKIP' "$out" | sed "s|^|    $name: |"
    printf '%-36s %3d passed, %d failed, %d skipped\n' "$name" "$p" "$f" "$s"
}

selected() {
    [ -z "${TESTS:-}" ] && return 0
    case "$1" in *$TESTS*) return 0 ;; esac
    return 1
}

suite() {
    [ -z "${SUITE:-}" ] || [ "$SUITE" = "$1" ]
}

for t in "$BUILD"/tests/test_*; do
    suite unit || break
    [ -x "$t" ] || continue
    name=$(basename "$t")
    selected "$name" || continue
    out="$log_dir/$name.log"
    CMOCKA_MESSAGE_OUTPUT=TAP timeout 300 "$t" >"$out" 2>&1
    count "$name" "$out" $?
done

for t in tests/integration/test_*.sh tests/integration/test_*.py; do
    suite integration || break
    [ -f "$t" ] || continue
    name=$(basename "$t")
    selected "$name" || continue
    out="$log_dir/$name.log"
    case "$t" in
    *.py) timeout 900 /usr/bin/python3 "$t" >"$out" 2>&1 ;;
    *) timeout 900 sh "$t" >"$out" 2>&1 ;;
    esac
    count "$name" "$out" $?
done

[ -n "$failed_names" ] && echo "failed:$failed_names (logs in $log_dir)"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
