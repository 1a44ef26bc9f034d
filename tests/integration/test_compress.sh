#!/bin/sh
# --compress fp16|bf16: pushes travel as 16-bit floats; the accuracy cost on
# Fashion-MNIST (MLP, 3 epochs, cosine) is measured against float32 pushes
# and must stay under one point.  A gradient too large for fp16 becomes Inf,
# which the servers treat as non-finite (no Inf reaches the model).
. "$(dirname "$0")/lib.sh"

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
# Bytes into the server (its summary): 16-bit pushes carry half as much.
make_csv "$TMP/d.csv" 400 50 4
W="--data csv:$TMP/d.csv --model mlp --hidden 200 --batch-size 10 --epochs 2 --progress none"
for c in none bf16; do
    timeout -k 5 120 mpirun --oversubscribe -np 1 "$SERVER" : -np 2 "$WORKER" $W --compress $c \
        >"$TMP/bytes-$c.log" 2>&1
done
in_none=$(sed -n 's/.* in \([0-9.]*\) MB.*/\1/p' "$TMP/bytes-none.log")
in_bf16=$(sed -n 's/.* in \([0-9.]*\) MB.*/\1/p' "$TMP/bytes-bf16.log")
echo "# bytes into the server: $in_none MB float32, $in_bf16 MB bf16"
check "--compress bf16 roughly halves the bytes the server receives ($in_bf16 vs $in_none MB)" \
    awk -v a="$in_bf16" -v b="$in_none" 'BEGIN { exit !(b > 0 && a / b > 0.45 && a / b < 0.6) }'
