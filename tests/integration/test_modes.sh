#!/bin/sh
# Consistency modes: ssp with staleness 0 equals sync bit for bit; async and
# ssp reach a Fashion-MNIST softmax accuracy within 1 point of sync; with one
# worker slowed (--test-delay-ms, a test-only flag) ssp's measured staleness
# never exceeds its bound, and async lets the fast worker finish first.
. "$(dirname "$0")/lib.sh"

make_csv "$TMP/train.csv" 240 12 3
SMALL="--data csv:$TMP/train.csv --model mlp --hidden 40 --batch-size 16 --epochs 2 --seed 5"
psrun 120 2 "--chunk-kib 4 --save $TMP/sync.st" 3 "$SMALL" "$TMP/sync.log" &&
    psrun 120 2 "--chunk-kib 4 --mode ssp --staleness 0 --save $TMP/ssp0.st" 3 "$SMALL" \
        "$TMP/ssp0.log" &&
    check "ssp with staleness 0 == sync, bit for bit (every tensor)" \
        close_to "$TMP/sync.st" "$TMP/ssp0.st" 0 0 ||
    not_ok "ssp staleness 0 jobs ran"

last() { tail -n 1 "$1" | sed -n "s/.*\"$2\":\([0-9.eE+-]*\).*/\1/p"; }
FM="--model softmax --data fashion-mnist --batch-size 64 --epochs 4"
for mode in sync async ssp; do
    extra=""
    [ "$mode" = ssp ] && extra="--staleness 2"
    psrun 300 1 "--lr 0.02 --momentum 0.9 --lr-schedule cosine --mode $mode $extra" 2 \
        "$FM --metrics $TMP/fm-$mode.jsonl" "$TMP/fm-$mode.log" ||
        not_ok "Fashion-MNIST softmax in $mode mode ran"
done
acc_sync=$(last "$TMP/fm-sync.jsonl" test_acc)
for mode in async ssp; do
    acc=$(last "$TMP/fm-$mode.jsonl" test_acc)
    echo "# test accuracy: sync $acc_sync, $mode $acc"
    check "$mode accuracy within 1 point of sync ($acc vs $acc_sync)" \
        awk -v a="$acc" -v b="$acc_sync" 'BEGIN { d = a - b; exit !(a != "" && d > -0.01 && d < 0.01) }'
done

# One slow worker (rank 1 sleeps 30 ms per step), staleness bound 2.
SLOW="--data csv:$TMP/train.csv --model softmax --batch-size 8 --epochs 3 --progress none"
timeout -k 5 120 mpirun -np 1 "$SERVER" --mode ssp --staleness 2 : \
    -np 1 "$WORKER" $SLOW --metrics "$TMP/ssp-slow.jsonl" : \
    -np 1 "$WORKER" $SLOW --test-delay-ms 30 >"$TMP/ssp-slow.log" 2>&1 ||
    not_ok "ssp job with a slow worker ran"
smax=$(last "$TMP/ssp-slow.jsonl" staleness_max)
echo "# ssp staleness 2 with a slow worker: max staleness $smax, mean $(last "$TMP/ssp-slow.jsonl" staleness_mean)"
check "ssp: measured staleness never exceeds the bound (max $smax <= 2)" \
    awk -v s="$smax" 'BEGIN { exit !(s != "" && s <= 2) }'
check "ssp: the fast worker did run ahead (max staleness $smax > 0)" \
    awk -v s="$smax" 'BEGIN { exit !(s != "" && s > 0) }'

# Here the slow worker is rank 0 and the fast one rank 1.
timeout -k 5 120 mpirun -np 1 "$SERVER" --mode async : \
    -np 1 "$WORKER" $SLOW --test-delay-ms 30 --metrics "$TMP/async-slow.jsonl" : \
    -np 1 "$WORKER" $SLOW >"$TMP/async-slow.log" 2>&1 ||
    not_ok "async job with a slow worker ran"
# The server logs, when each worker finishes, the steps every worker pushed.
line=$(grep -m1 "worker 1 finished" "$TMP/async-slow.log")
echo "# $line"
slow_steps=$(echo "$line" | sed -n 's/.* 0:\([0-9]*\).*/\1/p')
fast_steps=$(echo "$line" | sed -n 's/.* 1:\([0-9]*\).*/\1/p')
check "async: the fast worker finished all $fast_steps steps while the slow one had pushed $slow_steps" \
    awk -v s="$slow_steps" -v f="$fast_steps" 'BEGIN { exit !(s != "" && f != "" && s < f) }'
echo "# async with a slow worker: max staleness $(last "$TMP/async-slow.jsonl" staleness_max), mean $(last "$TMP/async-slow.jsonl" staleness_mean)"
