#!/bin/sh
# Runs the libFuzzer targets built by `make fuzz` (build/fuzz/fuzz_*), each
# for a bounded time over its seed corpus, and says how much each did:
#
#   sh tests/fuzz/run.sh [-t SECONDS] [TARGET...]    (default: 20 s, all)
#
# TARGET is wire, libsvm, csv, idx or safetensors.  Per target it prints
#   fuzz_wire: 812345 executions in 20 s (40617/s), corpus 231 inputs, peak RSS 41 MiB
# and on a crash, leak, sanitizer report, timeout or broken invariant the
# report's key lines and the path of the saved input, which replays with
#   build/fuzz/fuzz_wire build/fuzz/artifacts/wire-crash-...
# Exit status: 0 when no target failed.
#
# The seed corpus (tests/fuzz/corpus/TARGET, committed) is only read; new
# inputs go to build/fuzz/corpus/TARGET, which later runs start from.
# Environment: FUZZ (the build folder, default build/fuzz).
set -u
cd "$(dirname "$0")/../.." || exit 2
FUZZ=${FUZZ:-build/fuzz}
# The harness's sanitizer settings (tests/run.sh) are for mpirun jobs: slow
# unwinding would cost the fuzzers most of their speed.
unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
seconds=20
if [ "${1:-}" = "-t" ]; then
    seconds=${2:?-t needs a number of seconds}
    shift 2
fi
targets=${*:-wire libsvm csv idx safetensors}
mkdir -p "$FUZZ/artifacts" "$FUZZ/logs"

# stat NAME LOG: a libFuzzer -print_final_stats=1 value, empty when absent.
final_stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }

# Prints what went wrong, from the log of a failed run.
report() {
    grep -E 'invariant failed|ERROR: |SUMMARY: |runtime error|^ *#[0-9]+ 0x.* in [a-z_]+ [^ ]*(common|server|worker|tests/fuzz)/' \
        "$1" | head -25 | sed 's/^/    /'
    sed -n 's/^.*Test unit written to \(.*\)$/    input saved as \1/p' "$1"
}

failed=0
for t in $targets; do
    bin=$FUZZ/fuzz_$t
    log=$FUZZ/logs/$t.log
    if [ ! -x "$bin" ]; then
        echo "fuzz_$t: not built (run make fuzz)"
        failed=$((failed + 1))
        continue
    fi
    mkdir -p "$FUZZ/corpus/$t"
    start=$(date +%s)
    # -max_len: the seeds are tiny, 4 KiB leaves room to grow; -timeout:
    # one input taking this long is a finding (a hang), not slowness.
    timeout -k 10 $((seconds + 120)) "$bin" -max_total_time="$seconds" -print_final_stats=1 \
        -max_len=4096 -timeout=25 -rss_limit_mb=2048 -artifact_prefix="$FUZZ/artifacts/$t-" \
        "$FUZZ/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    took=$(($(date +%s) - start))
    execs=$(final_stat number_of_executed_units "$log")
    rss=$(final_stat peak_rss_mb "$log")
    inputs=$(find "$FUZZ/corpus/$t" -type f | wc -l | tr -d ' ')
    rate=$((${execs:-0} / (took > 0 ? took : 1)))
    if [ $rc -eq 0 ] && [ -n "$execs" ]; then
        echo "fuzz_$t: $execs executions in $took s ($rate/s), corpus $inputs inputs, peak RSS ${rss:-?} MiB"
    else
        echo "fuzz_$t: FAILED (exit status $rc) after ${execs:-?} executions in $took s; log $log"
        report "$log"
        failed=$((failed + 1))
    fi
done
[ "$failed" -eq 0 ]
