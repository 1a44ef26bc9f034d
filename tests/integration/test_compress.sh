#!/bin/sh
# --compress fp16|bf16: pushes travel as 16-bit floats; the accuracy cost on
# Fashion-MNIST (MLP, 3 epochs, cosine) is measured against float32 pushes
# and must stay under one point.  A chunk holding a gradient too large for
# fp16 (|g| >= 65520) goes as float32: a finite gradient arrives finite, so
# --on-nonfinite abort does not end a healthy job and skip drops exactly
# the steps whose gradient was not finite, on every chunk of every server.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3

last() { tail -n 1 "$1" | sed -n "s/.*\"$2\":\([0-9.eE+-]*\).*/\1/p"; }
FM="--model mlp --hidden 256,128 --data fashion-mnist --batch-size 64 --epochs 3"
for c in none fp16 bf16; do
    psrun 300 1 "--lr 0.05 --lr-schedule cosine" 2 "$FM --compress $c --metrics $TMP/$c.jsonl" \
        "$TMP/$c.log" || not_ok "Fashion-MNIST job with --compress $c ran"
done
base=$(last "$TMP/none.jsonl" test_acc)
for c in fp16 bf16; do
    acc=$(last "$TMP/$c.jsonl" test_acc)
    echo "# --compress $c: test accuracy $acc vs $base with float32 pushes"
    check "--compress $c costs less than 1 point of accuracy ($acc vs $base)" \
        awk -v a="$acc" -v b="$base" 'BEGIN { exit !(a != "" && b - a < 0.01) }'
done
# Bytes into the server's socket (its summary): 16-bit pushes carry half
# as much.  Over ipc: on shm (the one-host default) the tensors do not go
# through the socket at all.
make_csv "$TMP/d.csv" 400 50 4
W="--data csv:$TMP/d.csv --model mlp --hidden 200 --batch-size 10 --epochs 2 --progress none"
for c in none bf16; do
    timeout -k 5 120 mpirun --oversubscribe -np 1 "$SERVER" --transport ipc : -np 2 "$WORKER" $W --compress $c \
        >"$TMP/bytes-$c.log" 2>&1
done
in_none=$(sed -n 's/.* in \([0-9.]*\) MB.*/\1/p' "$TMP/bytes-none.log")
in_bf16=$(sed -n 's/.* in \([0-9.]*\) MB.*/\1/p' "$TMP/bytes-bf16.log")
echo "# bytes into the server: $in_none MB float32, $in_bf16 MB bf16"
check "--compress bf16 roughly halves the bytes the server receives ($in_bf16 vs $in_none MB)" \
    awk -v a="$in_bf16" -v b="$in_none" 'BEGIN { exit !(b > 0 && a / b > 0.45 && a / b < 0.6) }'

# Gradients beyond fp16.  A linear model (MSE) on targets near 1e6 from
# --init zeros: fc1.weight's gradient is about -2e6 x_j.  Features 0..1023
# lie in [0.5, 1.5), features 1024..2047 are 1000 times smaller, so with
# --chunk-kib 4 (1024 floats) over 2 servers chunk 0 (fc1.weight[0:1024],
# |g| ~ 2e6) and chunk 2 (fc1.bias) must go as float32 and chunk 1
# (|g| ~ 2e3) as fp16.  lr 1e-9 keeps the predictions far below the
# targets, so every step's gradient is that large.  80 rows, 2 workers, 10
# per batch, no shuffle: step s (1-based) reads rows 20(s-1) .. 20s-1.
make_big() { # PATH ROWS
    awk -v n="$2" 'BEGIN {
        s = 11
        for (i = 0; i < n; i++) {
            s = (s * 1103515245 + 12345) % 2147483648
            line = sprintf("%.1f", 1e6 * (1 + s / 2147483648.0))
            for (j = 0; j < 2048; j++) {
                s = (s * 1103515245 + 12345) % 2147483648
                v = 0.5 + s / 2147483648.0
                line = line sprintf(",%.6g", j < 1024 ? v : v * 1e-3)
            }
            print line
        }
    }' >"$1"
}
# cmp_big REF RUN: fc1.weight[0:1024] and fc1.bias (float32 chunks) equal
# bit for bit, fc1.weight[1024:] (the fp16 chunk) within 1% (fp16 rounds to
# 2^-11), and every chunk trained (no zero left of --init zeros).
cmp_big() {
    "$PY" - "$1" "$2" <<'EOF'
import sys
sys.path.insert(0, "tests/integration")
import numpy as np
import sthelp
a = sthelp.read(sys.argv[1])[0]
b = sthelp.read(sys.argv[2])[0]
wa, wb = a["fc1.weight"].ravel(), b["fc1.weight"].ravel()
ok = True
for name, x, y, rtol in (("fc1.weight[0:1024]", wa[:1024], wb[:1024], 0),
                         ("fc1.bias", a["fc1.bias"], b["fc1.bias"], 0),
                         ("fc1.weight[1024:]", wa[1024:], wb[1024:], 1e-2)):
    if not np.all(np.isfinite(y)) or np.any(y == 0):
        print("%s: not finite or not trained: %s" % (name, y[:4]))
        ok = False
    elif np.any(np.abs(x - y) > rtol * np.abs(x)):
        i = int(np.argmax(np.abs(x - y) - rtol * np.abs(x)))
        print("%s[%d]: %.9g vs %.9g" % (name, i, x[i], y[i]))
        ok = False
sys.exit(0 if ok else 1)
EOF
}
if ! "$PY" -c 'import numpy' 2>/dev/null; then
    skip "gradients beyond fp16" "no numpy in $PY"
    exit 0
fi
make_big "$TMP/big.csv" 80
# The same rows without step 3's (rows 40..59): the reference for a run
# that drops step 3.
awk 'NR <= 40 || NR > 60' "$TMP/big.csv" >"$TMP/big-no3.csv"
BW="--model linear --batch-size 10 --epochs 1 --no-shuffle --init zeros"
BS="--lr 1e-9 --chunk-kib 4"
psrun 60 2 "$BS --save $TMP/big-none.st" 2 "$BW --data csv:$TMP/big.csv" "$TMP/big-none.log" ||
    not_ok "the float32 reference job ran"
psrun 60 2 "$BS --save $TMP/big-fp16.st" 2 "$BW --data csv:$TMP/big.csv --compress fp16" \
    "$TMP/big-fp16.log"
rc=$?
check "--compress fp16 with |g| ~ 2e6 finishes under --on-nonfinite abort (exit $rc)" \
    [ "$rc" -eq 0 ]
check "the worker says chunks too large for fp16 went as float32" \
    grep -q "too large for 16 bits" "$TMP/big-fp16.log"
check "its model: float32 chunks bit for bit the float32 run's, the fp16 chunk within 1%" \
    cmp_big "$TMP/big-none.st" "$TMP/big-fp16.st"

# --on-nonfinite skip with a genuine NaN at step 3 (worker 1): the step is
# dropped on every chunk of both servers and no other step is: the model is
# the one trained on the same rows without step 3's (float32 pushes).
psrun 60 2 "$BS --on-nonfinite skip --save $TMP/no3.st" 2 "$BW --data csv:$TMP/big-no3.csv" \
    "$TMP/no3.log" || not_ok "the reference job without step 3's rows ran"
timeout -k 5 60 mpirun --oversubscribe -np 2 "$SERVER" $BS --on-nonfinite skip \
    --save "$TMP/nan3.st" : -np 1 "$WORKER" --progress none $BW --data "csv:$TMP/big.csv" \
    --compress fp16 : -np 1 "$WORKER" --progress none $BW --data "csv:$TMP/big.csv" \
    --compress fp16 --test-nan-step 3 >"$TMP/nan3.log" 2>&1
rc=$?
check "skip: the fp16 job with a NaN at step 3 completes (exit $rc)" [ "$rc" -eq 0 ]
check "skip: each of the 2 servers dropped exactly one step" \
    [ "$(grep -c 'steps skipped for non-finite gradients: 1$' "$TMP/nan3.log")" -eq 2 ]
check "skip: the model equals the run without step 3's rows (every chunk, both servers)" \
    cmp_big "$TMP/no3.st" "$TMP/nan3.st"
