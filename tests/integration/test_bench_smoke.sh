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
#   4. tests/bench/ddp_sparse_lr.py (sparse_lr_vs_ddp's reference) on 400
#      gen_sparse rows, 2 epochs of batch 64 x 2 processes: exit 0 and a
#      summary line whose test_logloss is finite and below log(2), the
#      logloss of the zero model it starts from (so it trained), and with
#      epoch lines 1 and 2; skipped when torch with gloo is not importable.
#      No timing is checked here.
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

# 4. The sparse logistic-regression DDP reference, tiny.
if "$PY" -c 'import torch, torch.distributed as d; assert d.is_gloo_available()' >/dev/null 2>&1; then
    "$TOOLS/gen_sparse" --rows 400 --vocab 2000 --id-space 40000 --seed 3 \
        --out "$TMP/slr_train.svm" >/dev/null
    "$TOOLS/gen_sparse" --rows 200 --vocab 2000 --id-space 40000 --seed 3 --part 1 \
        --out "$TMP/slr_test.svm" >/dev/null
    timeout -k 5 300 "$PY" tests/bench/ddp_sparse_lr.py --train "$TMP/slr_train.svm" \
        --test "$TMP/slr_test.svm" --epochs 2 --batch-size 64 --lr 0.5 \
        >"$TMP/slr.jsonl" 2>"$TMP/slr.err"
    rc=$?
    [ "$rc" -ne 0 ] && sed 's/^/# ddp_sparse_lr: /' "$TMP/slr.err"
    check "ddp_sparse_lr.py on 400 rows exits 0 (rc $rc)" [ "$rc" -eq 0 ]
    check "ddp_sparse_lr.py printed epochs 1, 2 and a summary with a trained test_logloss" \
        "$PY" -c '
import json, math, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if [r.get("epoch") for r in rows[:-1]] != [1, 2] or not rows[-1].get("summary"):
    sys.exit(f"lines {rows}")
ll = rows[-1]["test_logloss"]
if not (math.isfinite(ll) and 0 < ll < math.log(2)):
    sys.exit(f"test_logloss {ll} is not in (0, log 2)")
' "$TMP/slr.jsonl"
else
    skip "ddp_sparse_lr.py on 400 rows" "torch with gloo is not importable by $PY"
fi
