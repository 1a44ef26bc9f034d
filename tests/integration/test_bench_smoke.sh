#!/bin/sh
# bench_pushpull in `make test`, at a tiny size, so the benchmark cannot
# break unnoticed until the next `make bench` (it drives srv_loop and
# wkr_client directly, and once timed out in registration when the
# start-up sequence gained a step the real binaries took elsewhere).
#
#   1. bench_pushpull --elems 16384 --seconds 0.01 RESULTS (a 64 KiB
#      tensor) exits 0 within 120 s, prints no warning or error, and
#      appends its five JSON lines: pushpull_64KiB_tcp, pushpull_64KiB_ipc,
#      pushpull_64KiB, pushpull_small_tensors, pushpull_streams, each with
#      a positive value and reference_value.
#   2. The same with --shm: exit 0, one line, pushpull_64KiB_shm.
#   3. --elems outside [1024, 16777216] is refused: exit 2, naming --elems.
# The bench checks its own runs (pulled weights bit for bit, push counts),
# so exit 0 means the data went round correctly, not only that it ran.
. "$(dirname "$0")/lib.sh"

BENCH="$BUILD/bench/bench_pushpull"
PY=/usr/bin/python3

# json_names FILE NAME...: FILE holds exactly these JSON lines, in order,
# each with the six fields and positive numbers.
json_names() {
    "$PY" - "$@" <<'EOF'
import json, sys

path, want = sys.argv[1], sys.argv[2:]
rows = [json.loads(l) for l in open(path) if l.strip()]
names = [r.get("name") for r in rows]
if names != want:
    sys.exit(f"names {names}, expected {want}")
for r in rows:
    if set(r) != {"name", "value", "unit", "reference", "reference_value", "ratio"}:
        sys.exit(f"{r['name']}: fields {sorted(r)}")
    if not (r["value"] > 0 and r["reference_value"] > 0 and r["ratio"] > 0):
        sys.exit(f"{r['name']}: a figure is not positive: {r}")
EOF
}

# run_smoke TAG ARGS...: runs the bench into $TMP/TAG.jsonl; sets $rc.
run_smoke() {
    tag=$1
    shift
    timeout -k 5 120 "$BENCH" "$@" "$TMP/$tag.jsonl" >"$TMP/$tag.out" 2>"$TMP/$tag.err"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        sed "s/^/# $tag: /" "$TMP/$tag.out" "$TMP/$tag.err"
    fi
}

quiet() {
    if grep -Ei 'warning|error' "$TMP/$1.err"; then
        return 1
    fi
    return 0
}

if [ ! -x "$BENCH" ]; then
    not_ok "$BENCH exists (make test builds it)"
    exit 1
fi

run_smoke tcp_ipc --elems 16384 --seconds 0.01
check "bench_pushpull --elems 16384 --seconds 0.01 exits 0 (rc $rc)" [ "$rc" -eq 0 ]
check "bench_pushpull printed no warning or error" quiet tcp_ipc
check "bench_pushpull wrote its five JSON lines for 64 KiB" json_names "$TMP/tcp_ipc.jsonl" \
    pushpull_64KiB_tcp pushpull_64KiB_ipc pushpull_64KiB pushpull_small_tensors pushpull_streams

run_smoke shm --shm --elems 16384 --seconds 0.01
check "bench_pushpull --shm --elems 16384 --seconds 0.01 exits 0 (rc $rc)" [ "$rc" -eq 0 ]
check "bench_pushpull --shm printed no warning or error" quiet shm
check "bench_pushpull --shm wrote one JSON line, pushpull_64KiB_shm" json_names \
    "$TMP/shm.jsonl" pushpull_64KiB_shm

"$BENCH" --elems 10 >"$TMP/bad.out" 2>&1
rc=$?
check "--elems 10 is refused with exit 2 (rc $rc)" [ "$rc" -eq 2 ]
check "the refusal names --elems" grep -q -- '--elems wants a whole number' "$TMP/bad.out"
