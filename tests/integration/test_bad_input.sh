#!/bin/sh
# Each kind of bad input ends the whole job promptly (within the timeout
# given to psrun, far below the server's --timeout) with a non-zero exit and
# a one-line message naming what is wrong.
. "$(dirname "$0")/lib.sh"

make_csv "$TMP/good.csv" 60 6 3
printf '1,0.5,0.25\n2,0.1\n' >"$TMP/ragged.csv"
printf '0 1:0.5 7:1\n1 2:0.25\n' >"$TMP/wide.svm"
printf '0,1,2\n5,3,4\n' >"$TMP/label.csv"
printf '0,1,x2\n' >"$TMP/number.csv"
# Tiny files that would infer a huge shape (a 64 MiB dense row, 16M classes).
printf '0 1:1\n1 16777216:1\n' >"$TMP/huge.svm"
printf '0 1:1\n16000000 2:1\n' >"$TMP/classes.svm"
printf '0 1:1\n1 1048577:1\n' >"$TMP/over.svm"     # one feature over the cap
printf '0 1:1\n69999 2:1\n' >"$TMP/overlabel.svm" # 70000 classes, over the cap

# expect_fail "description" "regex" S "server flags" W "worker flags"
expect_fail() {
    d=$1 re=$2
    psrun 60 "$3" "$4" "$5" "$6" "$TMP/bad.log"
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

# expect_prompt_fail SECONDS "description" "regex" S "server flags" W "worker flags":
# expect_fail, and within SECONDS: for output that cannot be written, jobs
# that would train for far longer (GLONG), so only a check before the first
# step passes.
expect_prompt_fail() {
    _max=$1
    shift
    _t0=$(date +%s)
    expect_fail "$@"
    _dt=$(($(date +%s) - _t0))
    check "$1: before training (${_dt} s, at most $_max)" [ "$_dt" -le "$_max" ]
}

G="--data csv:$TMP/good.csv --model softmax --epochs 1 --batch-size 8"
expect_fail "missing data file" "nonexistent.csv" 1 "" 2 \
    "--data csv:$TMP/nonexistent.csv --model softmax"
expect_fail "CSV row with the wrong column count names its line" "ragged.csv:2" 1 "" 2 \
    "--data csv:$TMP/ragged.csv --model softmax"
expect_fail "malformed number names its line" "number.csv:1" 1 "" 1 \
    "--data csv:$TMP/number.csv --model softmax"
expect_fail "feature index beyond --features" "wide.svm:1.*7" 1 "" 2 \
    "--data libsvm:$TMP/wide.svm --features 4 --model softmax"
expect_fail "label outside --classes" "label.csv:2.*5" 1 "" 2 \
    "--data csv:$TMP/label.csv --classes 3 --model softmax"
expect_fail "inferred feature count above the cap names the line and --features" \
    "huge.svm:2: .*--features" 1 "" 2 "--data libsvm:$TMP/huge.svm --model softmax"
expect_fail "inferred class count above the cap names the line and --classes" \
    "classes.svm:2: .*--classes" 1 "" 2 "--data libsvm:$TMP/classes.svm --model softmax"
expect_fail "one feature over the cap is refused when inferred" \
    "over.svm:2: .*--features" 1 "" 1 "--data libsvm:$TMP/over.svm --model softmax"
# Given explicitly, shapes over the caps load and train (one step each).
for f in "over.svm --features 1048577" "overlabel.svm --classes 70000"; do
    if psrun 120 1 "" 1 "--data libsvm:$TMP/$f --model softmax --epochs 1 --batch-size 2" \
        "$TMP/over.log"; then
        ok "over the cap when given explicitly: $f trains"
    else
        not_ok "over the cap when given explicitly: $f trains"
        sed 's/^/#   /' "$TMP/over.log" | tail -8
    fi
done
# About 400 steps of 50 ms: 20 s of training before any --save.
GLONG="--data csv:$TMP/good.csv --model softmax --epochs 100 --batch-size 8 --test-delay-ms 50"
: >"$TMP/regular"
expect_prompt_fail 12 "--save under a regular file names the path" \
    "--save $TMP/regular/m.st: cannot create a file in $TMP/regular" 1 "--save $TMP/regular/m.st" \
    2 "$GLONG"
expect_prompt_fail 12 "--save in a folder that does not exist names the path" \
    "--save $TMP/nodir/m.st: cannot create a file in $TMP/nodir: No such file" 2 \
    "--save $TMP/nodir/m.st" 1 "$GLONG"
expect_prompt_fail 12 "--save naming a directory" "--save $TMP: is a directory" 1 \
    "--save $TMP" 1 "$GLONG"
expect_prompt_fail 12 "--checkpoint-dir under a regular file names the path" \
    "--checkpoint-dir $TMP/regular/ck: cannot create the directory" 2 \
    "--checkpoint-dir $TMP/regular/ck --checkpoint-every 2" 2 "$GLONG"
# Above the store's bound (a server keeps staleness + 1 steps of pushes per
# chunk), refused with the flags: not at registration after --timeout.
expect_prompt_fail 12 "--staleness beyond the servers' bound names the bound" \
    "--staleness 2000: at most 1024 .*--mode async" 1 "--mode ssp --staleness 2000" 2 "$G"
expect_fail "negative learning rate" "Invalid learning rate" 1 "--lr -0.1" 2 "$G"
expect_fail "Nesterov without momentum" "Nesterov momentum requires" 1 \
    "--momentum 0 --nesterov" 2 "$G"
expect_fail "Nesterov with dampening" "Nesterov momentum requires" 1 \
    "--momentum 0.9 --dampening 0.1 --nesterov" 2 "$G"
expect_fail "negative weight decay" "Invalid weight_decay" 1 "--weight-decay -1" 1 "$G"
expect_fail "bad worker flag value" "batch-size" 1 "" 2 "$G --batch-size 0"
expect_fail "non-numeric flag value" "--lr: bad value" 1 "--lr abc" 1 "$G"
expect_fail "unknown flag" "unknown flag '--bogus'" 1 "" 1 "$G --bogus 3"
expect_fail "unknown model" "model" 1 "" 1 "$G --model resnet"
expect_fail "--streams 0" "--streams 0: want 1 to 16" 1 "" 2 "$G --streams 0"
expect_fail "--streams beyond 16" "--streams 17: want 1 to 16" 1 "" 1 "$G --streams 17"
expect_fail "--io-threads beyond 64" "--io-threads 65: want 1 to 64" 1 "" 1 "$G --io-threads 65"
expect_fail "server --transport mem" "--transport 'mem': want auto, shm, ipc or tcp" 1 \
    "--transport mem" 1 "$G"
expect_fail "worker --transport bogus" "--transport 'bogus': want auto, shm, ipc or tcp" 1 "" 2 \
    "$G --transport bogus"
expect_fail "server --transport shm, worker --transport ipc, one host" \
    "server 0 says --transport shm and worker 0 says --transport ipc" 1 "--transport shm" 1 \
    "$G --transport ipc"
expect_fail "server --transport ipc, worker --transport tcp, one host" \
    "server 0 says --transport ipc and worker 0 says --transport tcp" 1 "--transport ipc" 1 \
    "$G --transport tcp"

# Workers that disagree on the model: MPMD with two worker contexts.
timeout -k 5 60 mpirun --oversubscribe -np 1 "$SERVER" --quiet : \
    -np 1 "$WORKER" --progress none $G --model mlp --hidden 8 : \
    -np 1 "$WORKER" --progress none $G --model mlp --hidden 16 >"$TMP/dis.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "disagree on the model" "$TMP/dis.log"; then
    ok "workers that disagree on the model end the job"
else
    not_ok "workers that disagree on the model end the job (status $rc)"
    sed 's/^/#   /' "$TMP/dis.log" | tail -8
fi

# A malformed message on the data port never changes a weight: covered by
# the unit tests of the decoder and by test_hostile.sh.
