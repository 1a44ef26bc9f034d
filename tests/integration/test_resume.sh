#!/bin/sh
# Checkpoint and resume (sync mode): a job killed with SIGKILL (a random
# rank, at a random step after its first checkpoint) and resumed from its
# last checkpoint ends with a --save file bit-identical to an uninterrupted
# run, also on a different number of servers; a torn or corrupt newest
# checkpoint is refused with a message and the previous one is used.
. "$(dirname "$0")/lib.sh"

make_csv "$TMP/d.csv" 240 12 3
# 3 epochs x 12 steps; the delay stretches the job to a few seconds so a
# kill lands mid-training.
W="--data csv:$TMP/d.csv --model mlp --hidden 300 --batch-size 10 --epochs 3 --seed 9"
SRV="--chunk-kib 4 --momentum 0.9 --nesterov --lr-schedule cosine --checkpoint-every 4"

psrun 120 2 "$SRV --checkpoint-dir $TMP/ref.ck --save $TMP/ref.st" 2 "$W" "$TMP/ref.log" ||
    not_ok "uninterrupted reference run"

# trial N SERVERS_BEFORE SERVERS_AFTER
trial() {
    ck=$TMP/ck$1
    timeout -k 5 120 mpirun --oversubscribe -np "$2" "$SERVER" --quiet $SRV --checkpoint-dir "$ck" \
        --save "$TMP/never.st" : -np 2 "$WORKER" --progress none $W --test-delay-ms 40 \
        >"$TMP/kill$1.log" 2>&1 &
    job=$!
    # Wait for a first complete checkpoint, then a random extra moment.
    for _ in $(seq 1 200); do
        ls "$ck"/step-*/MANIFEST >/dev/null 2>&1 && break
        sleep 0.05
    done
    sleep "0.$(awk -v s="$1" 'BEGIN { srand(s * 7919); printf "%d", rand() * 9 }')"
    # This job's ranks only: other jobs on the machine may run ps-worker
    # with the same flags (the data file is in this test's $TMP).
    pids=$(pgrep -f "ps-(server|worker) .*$ck" ; pgrep -f "ps-worker .*$TMP/d.csv.*test-delay-ms 40")
    victim=$(echo "$pids" | sort -u | awk -v s="$1" 'BEGIN { srand(s) } { p[NR] = $1 }
        END { if (NR) print p[int(rand() * NR) + 1] }')
    name=$(ps -o args= -p "$victim" 2>/dev/null | awk '{ print $1 }')
    kill -KILL "$victim" 2>/dev/null
    wait "$job"
    rc=$?
    last=$(ls -d "$ck"/step-* 2>/dev/null | tail -n 1)
    echo "# trial $1: killed $(basename "$name") pid $victim, job exit $rc, newest checkpoint $(basename "$last")"
    psrun 120 "$3" "$SRV --checkpoint-dir $ck --resume $ck --save $TMP/res$1.st" 2 "$W" \
        "$TMP/res$1.log"
    check "trial $1: killed at a random step, resumed on $3 server(s) (was $2): bit-identical --save" \
        same_bits "$TMP/ref.st" "$TMP/res$1.st"
}
trial 1 2 2
trial 2 2 1
trial 3 1 3
trial 4 3 2

# Torn and corrupt newest checkpoints fall back to the previous one.
newest() { ls -d "$1"/step-* | tail -n 1; }
torn() { # name how-to-damage
    cp -r "$TMP/ref.ck" "$TMP/t$1"
    dir=$(newest "$TMP/t$1")
    eval "$2"
    timeout -k 5 120 mpirun --oversubscribe -np 2 "$SERVER" $SRV --checkpoint-dir "$TMP/t$1" \
        --resume "$TMP/t$1" --save "$TMP/t$1.st" : -np 2 "$WORKER" --progress none $W \
        >"$TMP/t$1.log" 2>&1
    rc=$?
    grep -m1 "unusable" "$TMP/t$1.log" | sed 's/^/# /'
    check "$1: refused with a message naming it, the previous checkpoint used, bit-identical" \
        sh -c "[ $rc -eq 0 ] && grep -q 'step .* is unusable' '$TMP/t$1.log' &&
               grep -q 'trying the previous one' '$TMP/t$1.log' &&
               cmp -s '$TMP/ref.st' '$TMP/t$1.st'"
}
torn "cut short" 'f=$dir/server-1.safetensors; head -c 100 "$f" >"$f.x" && mv "$f.x" "$f"'
torn "bad checksum" 'printf "\377" | dd of="$dir/server-0.safetensors" bs=1 seek=2000 conv=notrunc 2>/dev/null'
torn "missing file" 'rm "$dir/server-1.safetensors"'
torn "wrong layout" 'sed -i "s/^layout .*/layout 0123456789abcdef/" "$dir/MANIFEST"'

# A checkpoint folder that becomes unusable mid-run (replaced by a file
# once the first checkpoint is in) ends the job with an error naming it:
# never a run that goes on without the checkpoints it was asked for.
ck=$TMP/gone.ck
timeout -k 5 120 mpirun --oversubscribe -np 2 "$SERVER" --quiet $SRV --checkpoint-dir "$ck" \
    : -np 2 "$WORKER" --progress none $W --test-delay-ms 100 >"$TMP/gone.log" 2>&1 &
job=$!
for _ in $(seq 1 400); do
    ls "$ck"/step-*/MANIFEST >/dev/null 2>&1 && break
    sleep 0.05
done
rm -rf "$ck" && : >"$ck"
wait "$job"
rc=$?
grep -m1 "failed twice" "$TMP/gone.log" | sed 's/^/# /'
check "a checkpoint folder replaced by a file mid-run ends the job with an error (exit $rc)" \
    sh -c "[ $rc -ne 0 ] && [ $rc -ne 124 ] &&
           grep -q 'checkpoint of step [0-9]* in --checkpoint-dir $ck failed twice' '$TMP/gone.log'"

# Settings that differ from the checkpoint's are refused, not silently
# mixed, naming each setting that differs with both values.
psrun 60 1 "$SRV --lr 0.5 --checkpoint-dir $TMP/ref.ck --resume $TMP/ref.ck" 2 "$W" "$TMP/set.log"
rc=$?
grep -m1 "other settings" "$TMP/set.log" | sed 's/^/# /'
check "a checkpoint taken with other settings is refused, naming lr and both values (exit $rc)" \
    sh -c "[ $rc -ne 0 ] && grep -q 'other settings: lr (checkpoint 0.01, this run 0.5)\$' '$TMP/set.log'"

# timed NAME LIMIT CMD...: run CMD, then check it failed (not by timeout)
# within LIMIT seconds; what the log says is checked by the caller.
timed() {
    _n=$1 _lim=$2
    shift 2
    _t0=$(date +%s)
    "$@"
    _rc=$?
    _dt=$(($(date +%s) - _t0))
    check "$_n: refused within $_lim s (exit $_rc, $_dt s)" \
        sh -c "[ $_rc -ne 0 ] && [ $_rc -ne 124 ] && [ $_dt -le $_lim ]"
}

# Resuming another model: refused at registration, at once (not after the
# 300 s --timeout), with the reason on every rank: a libpsclient worker
# (start_probe, a 10-float model) prints what its ps_start returned.
probe_job() {
    timeout -k 5 120 mpirun --oversubscribe -np 2 "$SERVER" --quiet $SRV --resume "$TMP/ref.ck" \
        : -np 2 "$TOOLS/start_probe" 10 12 3 >"$TMP/model.log" 2>&1
}
timed "resume with another model (start_probe)" 10 probe_job
grep -m1 "start_probe\[1\]" "$TMP/model.log" | sed 's/^/# /'
check "another model: worker 0 hears the servers' refusal, worker 1 the job's reason" \
    sh -c "grep -q 'start_probe\[0\]: ps_start: .*server [01] (host [^ )][^)]*) refused: server [01] cannot hold the model: the --resume checkpoint (step [0-9]*) holds another model' '$TMP/model.log' &&
           grep -q 'start_probe\[1\]: ps_start: .*holds another model ([0-9]* parameters, layout [0-9a-f]*) than the one worker 0 registered (10 parameters' '$TMP/model.log'"
timed "resume with another model (ps-worker --hidden 30)" 10 \
    psrun 120 2 "$SRV --resume $TMP/ref.ck" 2 "$(echo "$W" | sed 's/--hidden 300/--hidden 30/')" \
    "$TMP/model2.log"
check "another model (ps-worker): the message says the checkpoint holds another model" \
    grep -q "error: server 0 cannot hold the model: the --resume checkpoint .* holds another model" \
    "$TMP/model2.log"

# More epochs: allowed when the schedule does not depend on the run's
# length (constant here): 3 epochs with a checkpoint at the end, resumed
# with 5, ends bit-identical to 5 epochs in one go.  Under cosine (ref.ck)
# the same is refused, naming total_steps and why.
CONST="--chunk-kib 4 --momentum 0.9 --lr-schedule constant --checkpoint-every 12"
W5=$(echo "$W" | sed 's/--epochs 3/--epochs 5/')
psrun 120 2 "$CONST --save $TMP/c5.st" 2 "$W5" "$TMP/c5.log" || not_ok "5-epoch reference run"
psrun 120 2 "$CONST --checkpoint-dir $TMP/c3.ck" 2 "$W" "$TMP/c3.log" || not_ok "3-epoch run"
last=$(ls -d "$TMP"/c3.ck/step-* | tail -n 1)
psrun 120 2 "$CONST --checkpoint-dir $TMP/c3.ck --resume $TMP/c3.ck --save $TMP/c35.st" 2 "$W5" \
    "$TMP/c35.log"
rc=$?
check "constant schedule: 3 epochs ($(basename "$last")) resumed with --epochs 5 is bit-identical to 5 epochs (exit $rc)" \
    sh -c "[ $rc -eq 0 ] && [ '$(basename "$last")' = step-00000036 ] && cmp -s '$TMP/c5.st' '$TMP/c35.st'"
timed "cosine schedule resumed with --epochs 5" 10 \
    psrun 120 2 "$SRV --checkpoint-dir $TMP/ref.ck --resume $TMP/ref.ck" 2 "$W5" "$TMP/cos.log"
grep -m1 "other settings" "$TMP/cos.log" | sed 's/^/# /'
check "cosine schedule, more epochs: the refusal names total_steps and says why" \
    grep -q "other settings: total_steps (checkpoint 36, this run 60: the cosine schedule depends on the run's length" \
    "$TMP/cos.log"
check "sync mode only: --checkpoint-dir with --mode async is refused" \
    sh -c "! timeout 60 mpirun --oversubscribe -np 1 '$SERVER' --mode async --checkpoint-dir '$TMP/x' \
        --checkpoint-every 2 : -np 1 '$WORKER' $W >'$TMP/as.log' 2>&1 && grep -q 'need --mode sync' '$TMP/as.log'"

# A new run (no --resume) into a folder holding another run's checkpoints
# is refused at start-up, and nothing in the folder is deleted.
before=$(ls "$TMP/ref.ck" | sort | tr '\n' ' ')
psrun 60 1 "$SRV --checkpoint-dir $TMP/ref.ck" 2 "$W" "$TMP/fresh.log"
rc=$?
after=$(ls "$TMP/ref.ck" | sort | tr '\n' ' ')
check "a new run into another run's checkpoint folder is refused, folder kept (exit $rc)" \
    sh -c "[ $rc -ne 0 ] && [ $rc -ne 124 ] && [ -n '$before' ] && [ '$before' = '$after' ] &&
           grep -q 'already holds a checkpoint of another run' '$TMP/fresh.log'"
