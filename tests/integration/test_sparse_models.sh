#!/bin/sh
# The models over a sparse table (issue 14) end to end, 1 server + 2
# workers, on files from tests/tools/gen_sparse (a planted model):
#   - the generator is deterministic and LIBSVM ids can lie above 2^32;
#   - logreg on LIBSVM data reaches close to the planted model's own test
#     logloss (within 0.02) and AUC;
#   - embed-mlp on Criteo data reaches within 0.02 AUC of the planted
#     model (what PyTorch SGD with the same settings reaches too);
#   - logreg with 2 servers matches PyTorch SGD (embedding_bag) epoch by
#     epoch in file order;
#   - a resumed logreg run ends where an uninterrupted one does;
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

# ---- logreg against PyTorch, step by step -------------------------------------
# 2 servers + 2 workers, file order: the table's exact update is
# torch.optim.SGD on the table held dense (nn.functional.embedding_bag,
# per-sample weights = the LIBSVM values), so the test logloss after each
# epoch must agree to float32 rounding.  (The lazy update would not: it
# differs in the 4th digit here.)
cat >"$TMP/oracle.py" <<'PY'
import json, sys, torch
torch.set_default_dtype(torch.float32)
tr, te, metrics, B, W, epochs, lr, mom = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
ids = {}
def load(p):
    rows = []
    for line in open(p):
        t = line.split()
        y = 1.0 if float(t[0]) == 1 else 0.0
        rows.append((y, [(ids.setdefault(int(k), len(ids)), float(v)) for k, v in (x.split(':') for x in t[1:])]))
    return rows
trr, ter = load(tr), load(te)
def bag(rows):
    idx, off, wt = [], [], []
    for _, ent in rows:
        off.append(len(idx))
        for k, v in ent:
            idx.append(k); wt.append(v)
    return torch.tensor(idx, dtype=torch.long), torch.tensor(off, dtype=torch.long), torch.tensor(wt), torch.tensor([y for y, _ in rows])
w = torch.zeros(len(ids), 1, requires_grad=True)
b = torch.zeros(1, requires_grad=True)
opt = torch.optim.SGD([w, b], lr=lr, momentum=mom)
def logits(rows):
    i, o, v, y = bag(rows)
    return torch.nn.functional.embedding_bag(i, w, o, mode='sum', per_sample_weights=v)[:, 0] + b, y
# Worker k holds rows k, k+W, ...; step j takes rows [j*B, (j+1)*B) of each
# shard: together the file's rows [j*W*B, (j+1)*W*B) (no shuffle).
G = W * B
steps = (len(trr) + G - 1) // G
out = []
for e in range(epochs):
    for j in range(steps):
        z, y = logits(trr[j * G:(j + 1) * G])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad():
        z, y = logits(ter)
        out.append(torch.nn.functional.binary_cross_entropy_with_logits(z.double(), y.double()).item())
got = [json.loads(l)['test_logloss'] for l in open(metrics)]
bad = 0
for e, (t, g) in enumerate(zip(out, got)):
    print('# epoch %d: torch %.6f, ps %.6f' % (e + 1, t, g))
    bad |= abs(t - g) > 1e-4 * abs(t) + 1e-6
sys.exit(1 if bad or len(got) != len(out) else 0)
PY
if [ ! -x /usr/bin/python3 ] || ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    skip "logreg matches PyTorch SGD epoch by epoch" "no python3 torch"
else
    "$GEN" $S --rows 8000 --out "$TMP/small.svm" >/dev/null
    psrun 300 2 "--lr 0.1 --momentum 0.9" 2 "--model logreg --data libsvm:$TMP/small.svm \
        --test-data libsvm:$TMP/te.svm --batch-size 64 --epochs 2 --no-shuffle \
        --metrics $TMP/or.jsonl" "$TMP/or.log"
    check "logreg (2 servers, 2 workers) matches PyTorch SGD epoch by epoch" \
        /usr/bin/python3 "$TMP/oracle.py" "$TMP/small.svm" "$TMP/te.svm" "$TMP/or.jsonl" 64 2 2 \
        0.1 0.9
    # K = 2 micro-batches of 32 are one batch of 64; 7937 rows = 62 steps
    # of 128 and one of a single row, so worker 1 pushes 0 samples (no
    # weight) at the end of each epoch.
    "$GEN" $S --rows 7937 --out "$TMP/odd.svm" >/dev/null
    psrun 300 2 "--lr 0.1 --momentum 0.9" 2 "--model logreg --data libsvm:$TMP/odd.svm \
        --test-data libsvm:$TMP/te.svm --batch-size 32 --accumulate 2 --epochs 2 --no-shuffle \
        --metrics $TMP/odd.jsonl" "$TMP/odd.log"
    check "logreg with --accumulate 2 and an empty last batch matches PyTorch SGD" \
        /usr/bin/python3 "$TMP/oracle.py" "$TMP/odd.svm" "$TMP/te.svm" "$TMP/odd.jsonl" 64 2 2 \
        0.1 0.9
fi

# ---- logreg resumed -------------------------------------------------------------
# The trainer picks up at the servers' step with the same batches: a run
# checkpointed at step 40 and resumed on 2 servers ends with the model of
# a run never stopped, bit for bit.  (--sparse-update lazy: no catch-up of
# untouched rows, so this checks the worker's side alone.)
R="--model logreg --data libsvm:$TMP/small.svm --test-data libsvm:$TMP/te.svm --batch-size 64"
L="--lr 0.1 --momentum 0.9 --sparse-update lazy"
psrun 300 1 "$L --save $TMP/whole.st" 2 "$R --epochs 2" "$TMP/whole.log"
psrun 300 1 "$L --checkpoint-dir $TMP/ck --checkpoint-every 40" 2 "$R --epochs 1" "$TMP/ck.log"
psrun 300 2 "$L --resume $TMP/ck --save $TMP/resumed.st" 2 "$R --epochs 2" "$TMP/res.log"
# same_tensors A B: every tensor (the I64 keys too) has the same bytes.
same_tensors() {
    /usr/bin/python3 - "$1" "$2" <<'PY'
import json, struct, sys
def tensors(p):
    b = open(p, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop('__metadata__', None)
    return {k: (v['dtype'], v['shape'], b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]])
            for k, v in h.items()}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
print('# tensors %d, differing: %s' % (len(a), diff or 'none'))
sys.exit(1 if diff or not a else 0)
PY
}
check "logreg resumed at step 40 on 2 servers == never stopped (bit for bit)" \
    same_tensors "$TMP/whole.st" "$TMP/resumed.st"

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
