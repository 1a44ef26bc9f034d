#!/bin/sh
# The models over a sparse table (issue 14) end to end, 1 server + 2
# workers, on files from tests/tools/gen_sparse (a planted model):
#   - the generator is deterministic and LIBSVM ids can lie above 2^32;
#   - logreg on LIBSVM data reaches close to the planted model's own test
#     logloss (within 0.02) and AUC;
#   - embed-mlp on Criteo data reaches within 0.02 AUC of the planted
#     model (what PyTorch SGD with the same settings reaches too);
#   - the metrics carry test_logloss and test_auc;
#   - a malformed LIBSVM index or Criteo line ends the job naming
#     file:line, and the wrong data form for a model is refused.
. "$(dirname "$0")/lib.sh"

GEN=$TOOLS/gen_sparse
K32=4294967297 # 2^32 + 1

# json FILE KEY: KEY of the last JSON line of FILE.
json() { /usr/bin/python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])[sys.argv[2]])' "$1" "$2"; }
# le A B: A <= B as numbers.
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

# ---- the generator ----------------------------------------------------------
S="--rows 40000 --vocab 500 --per-row 10 --id-min $K32 --zipf 0.8 --seed 3"
"$GEN" $S --out "$TMP/tr.svm" >"$TMP/tr.json" &&
    "$GEN" $S --out "$TMP/te.svm" --rows 5000 --part 1 >"$TMP/te.json" &&
    "$GEN" $S --out "$TMP/tr2.svm" >/dev/null
check "gen_sparse: LIBSVM files written" [ -s "$TMP/tr.svm" ] && [ -s "$TMP/te.svm" ]
check "gen_sparse: the same seed gives the same bytes" cmp -s "$TMP/tr.svm" "$TMP/tr2.svm"
check "gen_sparse: another part gives other rows" [ "$(head -c 4000 "$TMP/tr.svm")" != "$(head -c 4000 "$TMP/te.svm")" ]
check "gen_sparse: every id is above 2^32" awk '{ for (i = 2; i <= NF; i++) {
    split($i, p, ":"); if (p[1] + 0 <= 4294967296) exit 1 } }' "$TMP/tr.svm"
check "gen_sparse: Zipf ids (the hottest id is in over 10% of the rows)" awk '{
    for (i = 2; i <= NF; i++) { split($i, p, ":"); c[p[1]]++ } }
    END { m = 0; for (k in c) if (c[k] > m) m = c[k]; exit !(m > NR / 10) }' "$TMP/tr.svm"

# ---- logreg -------------------------------------------------------------------
if psrun 300 1 "--lr 0.1 --momentum 0.9" 2 "--model logreg --data libsvm:$TMP/tr.svm \
    --test-data libsvm:$TMP/te.svm --batch-size 128 --epochs 8 --metrics $TMP/lr.jsonl" \
    "$TMP/lr.log"; then
    ok "logreg: 1 server + 2 workers, ids above 2^32"
else
    not_ok "logreg: 1 server + 2 workers, ids above 2^32"
    sed 's/^/#   /' "$TMP/lr.log" | tail -8
fi
PL=$(json "$TMP/te.json" planted_logloss)
PA=$(json "$TMP/te.json" planted_auc)
LL=$(json "$TMP/lr.jsonl" test_logloss 2>/dev/null || echo 99)
LA=$(json "$TMP/lr.jsonl" test_auc 2>/dev/null || echo 0)
echo "# logreg: test logloss $LL (planted $PL), AUC $LA (planted $PA)"
check "logreg: test logloss within 0.02 of the planted model's" le "$LL" "$(awk -v p="$PL" 'BEGIN { print p + 0.02 }')"
check "logreg: test AUC within 0.02 of the planted model's" le "$(awk -v p="$PA" 'BEGIN { print p - 0.02 }')" "$LA"
check "logreg: test_logloss is the mean BCE (= test_loss)" [ "$LL" = "$(json "$TMP/lr.jsonl" test_loss 2>/dev/null)" ]
check "logreg: one metrics line per epoch" [ "$(wc -l <"$TMP/lr.jsonl")" -eq 8 ]

# ---- embed-mlp ----------------------------------------------------------------
C="--format criteo --vocab 20 --zipf 0.8 --seed 5"
"$GEN" $C --rows 60000 --out "$TMP/tr.tsv" >/dev/null &&
    "$GEN" $C --rows 5000 --part 1 --out "$TMP/te.tsv" >"$TMP/tec.json"
check "gen_sparse: Criteo files of 40 fields" awk -F '\t' 'NF != 40 { exit 1 }' "$TMP/tr.tsv"
if psrun 300 1 "--lr 0.2 --momentum 0.9" 2 "--model embed-mlp --embed-dim 4 --hidden 32,16 \
    --data criteo:$TMP/tr.tsv --test-data criteo:$TMP/te.tsv --batch-size 128 --epochs 6 \
    --metrics $TMP/em.jsonl" "$TMP/em.log"; then
    ok "embed-mlp: 1 server + 2 workers on Criteo data"
else
    not_ok "embed-mlp: 1 server + 2 workers on Criteo data"
    sed 's/^/#   /' "$TMP/em.log" | tail -8
fi
PA=$(json "$TMP/tec.json" planted_auc)
EA=$(json "$TMP/em.jsonl" test_auc 2>/dev/null || echo 0)
echo "# embed-mlp: test AUC $EA (planted $PA)"
check "embed-mlp: test AUC within 0.02 of the planted model's" le "$(awk -v p="$PA" 'BEGIN { print p - 0.02 }')" "$EA"

# ---- bad input -------------------------------------------------------------------
expect_fail() {
    d=$1 re=$2
    psrun 60 1 "" 2 "$3" "$TMP/bad.log"
    rc=$?
    if [ $rc -eq 0 ] || [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        not_ok "$d (exit status $rc, expected a prompt failure)"
        sed 's/^/#   /' "$TMP/bad.log" | tail -8
    elif ! grep -Eq -- "$re" "$TMP/bad.log"; then
        not_ok "$d (no message matching /$re/)"
        sed 's/^/#   /' "$TMP/bad.log" | tail -8
    else
        ok "$d"
    fi
}
printf '1 5:1\n0 9223372036854775808:1\n' >"$TMP/big.svm"
printf '1 5:1\n0 -5:1\n' >"$TMP/neg.svm"
head -n 2 "$TMP/tr.tsv" >"$TMP/bad.tsv"
head -n 1 "$TMP/tr.tsv" | awk -F '\t' -v OFS='\t' '{ $20 = "zz"; print }' >>"$TMP/bad.tsv"
expect_fail "logreg: an index beyond 2^63-1 names file:line" "big.svm:2: .*2\\^63-1" \
    "--model logreg --data libsvm:$TMP/big.svm"
expect_fail "logreg: a negative index names file:line" "neg.svm:2: .*positive" \
    "--model logreg --data libsvm:$TMP/neg.svm"
expect_fail "embed-mlp: bad hex names file:line and the field" "bad.tsv:3: field 20 .*hex" \
    "--model embed-mlp --data criteo:$TMP/bad.tsv"
expect_fail "logreg refuses Criteo data" "logreg reads --data libsvm:" \
    "--model logreg --data criteo:$TMP/tr.tsv"
expect_fail "embed-mlp refuses a bad --embed-dim" "embed-dim 0" \
    "--model embed-mlp --embed-dim 0 --data criteo:$TMP/tr.tsv"
