#!/bin/sh
# Runs the libFuzzer targets built by `make fuzz` (build/fuzz/fuzz_*) and
# says how much each did.  Two modes:
#
#   sh tests/fuzz/run.sh -g [-r RUNS] [TARGET...]    the gate (CI, make test)
#   sh tests/fuzz/run.sh [-t SECONDS] [TARGET...]    a campaign (default 20 s)
#
# The gate is deterministic: a fixed -seed and a fixed number of -runs per
# target (RUNS_<target> below, or -r for all), starting from the committed
# inputs only (tests/fuzz/corpus/TARGET and tests/fuzz/regress/TARGET), with
# what it finds kept in a throw-away folder.  The same tree gives the same
# executions, so a gate fails only for what a change did.  A campaign is
# random and time-bound, and grows build/fuzz/corpus/TARGET across runs.
#
# TARGET is wire, libsvm, csv, idx, safetensors, libsvm64 or criteo.  Per target it prints
#   fuzz_wire: 812345 executions in 20 s (40617/s), corpus 231 inputs, peak RSS 41 MiB
# and on a crash, leak, sanitizer report, timeout or broken invariant the
# report's key lines and the path of the saved input, which replays with
#   build/fuzz/fuzz_wire build/fuzz/artifacts/wire-crash-...
# Exit status: 0 when no target failed.
#
# The committed inputs are only read.  tests/fuzz/regress/TARGET keeps every
# input that ever failed (see tests/fuzz/README.md).
# Environment: FUZZ (the build folder, default build/fuzz).
set -u
cd "$(dirname "$0")/../.." || exit 2
FUZZ=${FUZZ:-build/fuzz}
# The harness's sanitizer settings (tests/run.sh) are for mpirun jobs: slow
# unwinding would cost the fuzzers most of their speed.
unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
seconds=20 gate=0 runs=""
while [ $# -gt 0 ]; do
    case $1 in
    -t) seconds=${2:?-t needs a number of seconds}; shift 2 ;;
    -g) gate=1; shift ;;
    -r) runs=${2:?-r needs a number of runs}; shift 2 ;;
    -*) echo "run.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
    *) break ;;
    esac
done
targets=${*:-wire libsvm csv idx safetensors libsvm64 criteo}
mkdir -p "$FUZZ/artifacts" "$FUZZ/logs"

# Gate runs per target: about 15-30 s each on one core of the 2-core CI
# machine (the targets differ 100-fold in speed: idx inflates gzip).
gate_runs() {
    case $1 in
    wire) echo 3000000 ;;
    safetensors) echo 600000 ;;
    libsvm | csv | libsvm64 | criteo) echo 250000 ;;
    idx) echo 15000 ;;
    *) echo 100000 ;;
    esac
}
GATE_SEED=20261129

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
    # A target whose parser is an uninstrumented library gets its tokens.
    dict=""
    [ -f "tests/fuzz/$t.dict" ] && dict="-dict=tests/fuzz/$t.dict"
    seeds="tests/fuzz/corpus/$t"
    [ -d "tests/fuzz/regress/$t" ] && seeds="$seeds tests/fuzz/regress/$t"
    if [ $gate -eq 1 ]; then
        out=$FUZZ/gate-corpus/$t
        rm -rf "$out"
        n=${runs:-$(gate_runs "$t")}
        budget="-runs=$n -seed=$GATE_SEED"
        bound=1800
        mode="gate, seed $GATE_SEED"
    else
        out=$FUZZ/corpus/$t
        budget="-max_total_time=$seconds"
        bound=$((seconds + 120))
        mode="campaign"
    fi
    mkdir -p "$out"
    start=$(date +%s)
    # -max_len: the seeds are tiny, 4 KiB leaves room to grow; -timeout:
    # one input taking this long is a finding (a hang), not slowness.
    # shellcheck disable=SC2086
    timeout -k 10 $bound "$bin" $budget $dict -print_final_stats=1 \
        -max_len=4096 -timeout=25 -rss_limit_mb=2048 -artifact_prefix="$FUZZ/artifacts/$t-" \
        "$out" $seeds >"$log" 2>&1
    rc=$?
    took=$(($(date +%s) - start))
    execs=$(final_stat number_of_executed_units "$log")
    rss=$(final_stat peak_rss_mb "$log")
    inputs=$(find "$out" -type f | wc -l | tr -d ' ')
    rate=$((${execs:-0} / (took > 0 ? took : 1)))
    if [ $rc -eq 0 ] && [ -n "$execs" ]; then
        echo "fuzz_$t: $execs executions in $took s ($rate/s, $mode), $inputs inputs in $out, peak RSS ${rss:-?} MiB"
    else
        echo "fuzz_$t: FAILED (exit status $rc) after ${execs:-?} executions in $took s; log $log"
        report "$log"
        failed=$((failed + 1))
    fi
done
[ "$failed" -eq 0 ]
