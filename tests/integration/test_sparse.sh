#!/bin/sh
# Sparse tables end to end with tests/tools/sparse_worker (table "emb" +
# dense "bias"; rows a pure function of step, worker and key): S=2 == S=1
# bit for bit (the model and every row pulled), ssp and async, the
# non-finite rules, a worker that forgets a table, the calls' refusals, the
# memory bound.  The values themselves are checked against torch.optim.SGD
# and NumPy in test_sparse_torch.py.
. "$(dirname "$0")/lib.sh"

SW="$TOOLS/sparse_worker"
ARGS="12 3 10 40 --key-base 4294967303 --zero-step 4"
srun() { # srun TIMEOUT S "server flags" "worker args" LOG
    # shellcheck disable=SC2086
    timeout -k 5 "$1" mpirun --oversubscribe -np "$2" "$SERVER" --quiet $3 \
        : -np 2 "$SW" $4 >"$5" 2>&1
}

for mode in exact lazy; do
    srun 60 1 "--momentum 0.9 --sparse-update $mode --save $TMP/$mode-1.st" \
        "$ARGS --dump $TMP/$mode-1" "$TMP/$mode-1.log"
    r1=$?
    srun 60 2 "--momentum 0.9 --sparse-update $mode --save $TMP/$mode-2.st" \
        "$ARGS --dump $TMP/$mode-2 --async-handles" "$TMP/$mode-2.log"
    r2=$?
    check "$mode: S=1 and S=2 jobs complete (exit $r1, $r2)" [ "$r1" -eq 0 ] && [ "$r2" -eq 0 ]
    check "$mode: S=2 saves the same bits as S=1" same_bits "$TMP/$mode-1.st" "$TMP/$mode-2.st"
    check "$mode: every row pulled is the same bits with S=2 as with S=1" \
        sh -c "cmp -s $TMP/$mode-1.0 $TMP/$mode-2.0 && cmp -s $TMP/$mode-1.1 $TMP/$mode-2.1 \
               && [ -s $TMP/$mode-1.0 ]"
done
check "exact and lazy differ (momentum keeps untouched rows moving in exact)" \
    sh -c "! cmp -s $TMP/exact-1.st $TMP/lazy-1.st"

# ssp: pushes may run ahead, but each step is still every worker's pushes
# in rank order, and the gradients here do not depend on the weights: the
# final model is sync's, bit for bit in both modes (exact: a pull computes
# its rows' catch-up into the reply without storing it, so ssp pulls landing
# at other steps than sync's change nothing).
srun 60 2 "--momentum 0.9 --sparse-update lazy --mode ssp --staleness 2 --save $TMP/ssp.st" \
    "$ARGS" "$TMP/ssp.log"
check "ssp (staleness 2): completes (exit $?)" [ "$?" -eq 0 ]
check "ssp, lazy: the same final model as sync (every tensor, bit for bit)" \
    close_to "$TMP/ssp.st" "$TMP/lazy-2.st" 0 0
srun 60 2 "--momentum 0.9 --mode ssp --staleness 2 --save $TMP/sspx.st" "$ARGS" "$TMP/sspx.log"
check "ssp, exact: the same final model as sync (every tensor, bit for bit)" \
    close_to "$TMP/sspx.st" "$TMP/exact-2.st" 0 0

# async: every push applied on arrival with its own gradient.  With
# momentum 0 the table ends at -lr * (sum of every push), whatever the
# order, up to rounding: compared with test_sparse_torch.py's reference.
srun 60 2 "--momentum 0 --mode async --lr 0.1 --save $TMP/async.st" "$ARGS" "$TMP/async.log"
check "async: completes (exit $?)" [ "$?" -eq 0 ]
check "async: the table is the sum of every push's update (1e-5)" \
    /usr/bin/python3 "$(dirname "$0")/test_sparse_torch.py" --async-check "$TMP/async.st" \
    12 3 10 40 4294967303 4 0.1

# A hostile worker (sparse_worker --hostile: worker 1 sends every server
# malformed row messages through its own authenticated sockets: an
# undeclared table, a wrong dim, unsorted and duplicate keys, another
# server's key, steps outside the window, a short payload, a reply, an
# unsorted pull, a TABLES from worker 1): every one refused and counted,
# the model the same bits as without them.
timeout -k 5 60 mpirun --oversubscribe -np 2 "$SERVER" --momentum 0.9 --save "$TMP/hostile.st" \
    : -np 2 "$SW" $ARGS --hostile >"$TMP/hostile.log" 2>&1
check "hostile rows: the job completes (exit $?)" [ "$?" -eq 0 ]
sent=$(sed -n 's/^hostile: \([0-9]*\) messages to server 0$/\1/p' "$TMP/hostile.log")
got=$(sed -n 's/.*ps-server\[0\]: done: .* rejected \([0-9]*\),.*/\1/p' "$TMP/hostile.log")
got1=$(sed -n 's/.*ps-server\[1\]: done: .* rejected \([0-9]*\),.*/\1/p' "$TMP/hostile.log")
echo "# hostile: sent $sent per server; rejected: server 0 $got, server 1 $got1"
check "hostile rows: each server refused every one ($sent)" \
    sh -c "[ -n '$sent' ] && [ '$sent' -ge 10 ] && [ '$got' = '$sent' ] && [ '$got1' = '$sent' ]"
check "hostile rows: the model is unchanged (bit for bit)" \
    close_to "$TMP/hostile.st" "$TMP/exact-2.st" 0 0

# Non-finite: worker 1 pushes a NaN row at step 6.
srun 60 2 "--save $TMP/nan.st" "$ARGS --nan-step 6" "$TMP/nan-abort.log"
rc=$?
check "abort: a NaN row ends the job (exit $rc)" [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]
check "abort: the message names worker 1, table emb and step 7" \
    grep -q "non-finite gradient on worker 1 in table emb at step 7" "$TMP/nan-abort.log"
srun 60 2 "--on-nonfinite skip --save $TMP/skip.st" "$ARGS --nan-step 6" "$TMP/skip.log"
check "skip: completes (exit $?)" [ "$?" -eq 0 ]
# Dropping step 6 everywhere is what a step of no samples does: the same
# job with step 6 of zero samples (and no NaN) must save the same bits.
srun 60 2 "--on-nonfinite skip --save $TMP/zero6.st" \
    "12 3 10 40 --key-base 4294967303 --zero-step 6" "$TMP/zero6.log"
check "skip: the NaN step changed the model (against the run without it)" \
    sh -c "! cmp -s $TMP/skip.st $TMP/exact-2.st"
srun 60 2 "--on-nonfinite skip --save $TMP/nanonly.st" \
    "12 3 10 40 --key-base 4294967303 --nan-step 6" "$TMP/nanonly.log"
check "skip: a NaN step saves what a zero-sample step saves, bit for bit" \
    same_bits "$TMP/nanonly.st" "$TMP/zero6.st"

# A worker that forgets a table's push would leave the servers waiting:
# its dense push fails at once naming the table, and the job ends.
srun 60 2 "" "$ARGS --no-table-push 3" "$TMP/nopush.log"
rc=$?
check "a step without the table's push ends the job (exit $rc)" [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]
check "... naming the table and the step" \
    grep -q "step 3: table 'emb' was not pushed" "$TMP/nopush.log"

srun 60 1 "" "$ARGS --misuse" "$TMP/misuse.log"
check "the calls refuse misuse (second push, unknown table, late declaration, NULL keys)" \
    sh -c "[ \$(grep -c 'sparse\[.\]: ok' $TMP/misuse.log) -eq 8 ] && \
           ! grep -q 'not ok' $TMP/misuse.log"
srun 60 1 "" "$ARGS --misuse-start" "$TMP/mstart.log"
check "a refused table declaration fails ps_start on every rank" \
    sh -c "[ \$(grep -c 'sparse\[.\]: ok' $TMP/mstart.log) -eq 6 ] && \
           ! grep -q 'not ok' $TMP/mstart.log"

# --max-table-mib: 4000 new rows of 256 floats per step and worker (~8 MiB
# per step with the velocity) against a 16 MiB bound.
srun 60 2 "--max-table-mib 16" "20 256 4000 100000000" "$TMP/mem.log"
rc=$?
check "over --max-table-mib the job ends (exit $rc)" [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]
check "... naming the table, the server and the row count" \
    grep -Eq "server [01]: table emb: [0-9]+ rows.*--max-table-mib" "$TMP/mem.log"
check "--sparse-update and --max-table-mib are in --help" \
    sh -c "$SERVER --help | grep -q -- --sparse-update && $SERVER --help | grep -q -- --max-table-mib"
srun 30 1 "--sparse-update fast" "$ARGS" "$TMP/flag.log"
check "--sparse-update fast is refused naming the flag" grep -q -- "--sparse-update 'fast'" "$TMP/flag.log"

# Checkpoints carry the tables; a job killed with SIGKILL (a server, after
# its first whole checkpoint) resumes from it, on 1 or 3 servers, to the
# bits of an uninterrupted run.  Uniform init, weight decay and a cosine
# schedule, and a key space wide enough that rows are first touched after
# the resume: their exact catch-up needs the lr of the steps before it.
CA="30 3 10 400 --key-base 4294967303 --zero-step 4 --uniform 0.5 9"
CS="--momentum 0.9 --weight-decay 0.01 --lr-schedule cosine --checkpoint-every 4"
srun 120 2 "$CS --checkpoint-dir $TMP/ckref --save $TMP/ckref.st" "$CA" "$TMP/ckref.log"
check "checkpointed reference run (exit $?)" [ "$?" -eq 0 ]
# Without --checkpoint-dir: checkpoints must not change the bits (they
# keep each row's raw state and step; nothing is caught up in place).
srun 120 2 "$CS --save $TMP/nock.st" "$CA" "$TMP/nock.log"
check "run without checkpoints (exit $?)" [ "$?" -eq 0 ]
check "exact: checkpointing every 4 steps saves the same bits as no checkpoints" \
    sh -c "ls $TMP/ckref/step-*/MANIFEST >/dev/null 2>&1 && \
           $TOOLS/st_compare $TMP/ckref.st $TMP/nock.st --rtol 0 --atol 0 && \
           cmp -s $TMP/ckref.st $TMP/nock.st"
for ns in 1 3; do
    ck=$TMP/ck$ns
    timeout -k 5 120 mpirun --oversubscribe -np 2 "$SERVER" --quiet $CS --checkpoint-dir "$ck" \
        --save "$TMP/never.st" : -np 2 "$SW" $CA --delay-ms 60 >"$TMP/kill$ns.log" 2>&1 &
    job=$!
    for _ in $(seq 1 200); do
        ls "$ck"/step-*/MANIFEST >/dev/null 2>&1 && break
        sleep 0.05
    done
    # A server rank itself (its command line starts with the binary), not
    # the timeout or mpirun whose command lines name it too.
    victim=$(pgrep -f "^$SERVER .*$ck" | head -n 1)
    kill -KILL "$victim" 2>/dev/null
    wait "$job" 2>/dev/null
    last=$(ls -d "$ck"/step-*/MANIFEST 2>/dev/null | tail -n 1)
    echo "# killed server pid $victim; newest whole checkpoint: $last"
    srun 120 "$ns" "$CS --checkpoint-dir $ck --resume $ck --save $TMP/resumed$ns.st" "$CA" \
        "$TMP/resume$ns.log"
    grep -iv "^ *$" "$TMP/resume$ns.log" | grep -v "^--|MPI|mpirun|process|exit code|^ " | head -6 | sed "s/^/# /"
    check "killed (SIGKILL) after a checkpoint, resumed on $ns server(s): bit-identical --save" \
        sh -c "[ -n '$last' ] && [ ! -f $TMP/never.st ] && $TOOLS/st_compare \
               $TMP/resumed$ns.st $TMP/ckref.st --rtol 0 --atol 0 && \
               cmp -s $TMP/resumed$ns.st $TMP/ckref.st"
    check "... and the same bits as the run without checkpoints" \
        cmp -s "$TMP/resumed$ns.st" "$TMP/nock.st"
done
