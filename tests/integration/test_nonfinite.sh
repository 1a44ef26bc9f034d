#!/bin/sh
# Non-finite gradients (--test-nan-step poisons one worker's gradient, a
# test-only flag): --on-nonfinite abort ends the job naming the worker,
# tensor and step; skip drops that step for everyone, counts it, and the
# model never holds NaN or Inf.
. "$(dirname "$0")/lib.sh"

make_csv "$TMP/d.csv" 200 10 3
W="--data csv:$TMP/d.csv --model mlp --hidden 16 --batch-size 10 --epochs 2 --progress none"
start=$(date +%s)
timeout -k 5 60 mpirun -np 1 "$SERVER" : -np 1 "$WORKER" $W : \
    -np 1 "$WORKER" $W --test-nan-step 5 >"$TMP/abort.log" 2>&1
rc=$?
echo "# abort: exit $rc after $(( $(date +%s) - start )) s"
check "abort: the job ends non-zero" [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]
check "abort: the message names worker 1, fc1.weight and step 5" \
    grep -q "non-finite gradient on worker 1 in fc1.weight at step 5" "$TMP/abort.log"

timeout -k 5 60 mpirun -np 2 "$SERVER" --on-nonfinite skip --save "$TMP/skip.st" : \
    -np 1 "$WORKER" $W : -np 1 "$WORKER" $W --test-nan-step 5 >"$TMP/skip.log" 2>&1
rc=$?
check "skip: the job completes (exit $rc)" [ "$rc" -eq 0 ]
check "skip: the servers count one skipped step" \
    grep -q "steps skipped for non-finite gradients: 1" "$TMP/skip.log"
check "skip: the saved model holds no NaN or Inf" "$TOOLS/st_compare" --finite "$TMP/skip.st"
# Dropping the step means: the model equals a run that pushes a zero-weight
# step there.  Independent check: the same job with 2 servers vs 1 server
# skipping the same step gives the same bits (the drop is per step, on
# every chunk and every server alike).
timeout -k 5 60 mpirun -np 1 "$SERVER" --on-nonfinite skip --save "$TMP/skip1.st" : \
    -np 1 "$WORKER" $W : -np 1 "$WORKER" $W --test-nan-step 5 >"$TMP/skip1.log" 2>&1
check "skip: the whole step is dropped on every server alike (S=2 == S=1, bit for bit)" \
    close_to "$TMP/skip.st" "$TMP/skip1.st" 0 0
