#!/bin/sh
# Unattended recovery through deploy/ps-launch: one sync job (2 servers, 2
# workers, a checkpoint every 4 steps) run by the launcher loses a rank to
# SIGKILL twice: a rank picked by a seeded random (by MPI world rank, so
# server or worker) at a random moment after a checkpoint picked by the same
# random, the second time in the rerun after it wrote a checkpoint of its
# own.  The launcher must rerun twice with --resume and finish; the servers
# must say they resumed from the steps the launcher logged (a rerun from
# scratch would also end with the same model); the --save file must be
# bit-identical (cmp) to an uninterrupted run's.  PS_RECOVERY_SEED picks
# another reproducible pair of victims and moments.
. "$(dirname "$0")/lib.sh"

# The default seed kills a worker, then server 0.
SEED=${PS_RECOVERY_SEED:-8}
LAUNCH=deploy/ps-launch
CK=$TMP/ck
NS=2
NW=2
make_csv "$TMP/d.csv" 240 12 3
# 5 epochs x 12 steps; --test-delay-ms paces the steps (about 20 a second)
# so each kill lands mid-training.
W="--data csv:$TMP/d.csv --model mlp --hidden 300 --batch-size 10 --epochs 5 --seed 9"
SRV="--chunk-kib 4 --momentum 0.9 --nesterov --lr-schedule cosine --checkpoint-every 4"

psrun 60 $NS "$SRV --checkpoint-dir $TMP/ref.ck --save $TMP/ref.st" $NW "$W" "$TMP/ref.log" ||
    not_ok "uninterrupted reference run"

# rnd K N: the K-th number (K >= 1) of SEED's sequence, scaled to [0, N).
rnd() {
    awk -v s="$SEED" -v k="$1" -v n="$2" 'BEGIN {
        srand(s)
        for (i = 0; i < k; i++) x = rand()
        print int(x * n)
    }'
}

# wait_for FILE SECONDS: while the launcher runs.
wait_for() {
    _n=0
    while [ ! -e "$1" ]; do
        _n=$((_n + 1))
        [ $_n -le $(($2 * 20)) ] && kill -0 "$job" 2>/dev/null || return 1
        sleep 0.05
    done
}

# The pid of this job's live rank with MPI world rank $1 (its environment
# says which; its arguments name a file under $TMP).
rank_pid() {
    for _p in $(pgrep -x ps-server) $(pgrep -x ps-worker); do
        tr '\0' '\n' <"/proc/$_p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1" ||
            continue
        tr '\0' ' ' <"/proc/$_p/cmdline" 2>/dev/null | grep -qF "$TMP/" || continue
        echo "$_p"
        return 0
    done
    return 1
}

# kill_after N STEP K: once STEP's checkpoint is whole, wait 0-0.45 s and
# SIGKILL a rank, both picked by rnd (numbers K+1 and K+2).
kill_after() {
    manifest=$(printf '%s/step-%08d/MANIFEST' "$CK" "$2")
    if ! wait_for "$manifest" 40; then
        echo "# kill $1: step $2's checkpoint never appeared"
        return 1
    fi
    pause=$(rnd $(($3 + 1)) 10)
    sleep "$(awk -v p="$pause" 'BEGIN { printf "%.2f", p * 0.05 }')"
    rank=$(rnd $(($3 + 2)) $((NS + NW)))
    pid=$(rank_pid "$rank") || {
        echo "# kill $1: no live rank $rank"
        return 1
    }
    role=$(ps -o comm= -p "$pid")
    kill -KILL "$pid"
    echo "# kill $1: SIGKILL to world rank $rank ($role, pid $pid), $((pause * 50)) ms after" \
        "step $2's checkpoint"
}

timeout -k 5 120 "$LAUNCH" --retries 3 --delay 1 --log "$TMP/launch.log" -- \
    mpirun --oversubscribe -np $NS "$SERVER" $SRV --checkpoint-dir "$CK" --save "$TMP/out.st" \
    : -np $NW "$WORKER" --progress none $W --test-delay-ms 50 >"$TMP/job.log" 2>&1 &
job=$!

kills=0
# First kill: after the checkpoint of step 4 or 8.
kill_after 1 $((4 * (1 + $(rnd 1 2)))) 1 && kills=$((kills + 1))
# Second kill: in the rerun, after one of its own checkpoints (4 or 8
# steps past the one it resumed from).
for _ in $(seq 1 400); do
    grep -q 'attempt 2/4: resuming from step' "$TMP/launch.log" 2>/dev/null && break
    kill -0 $job 2>/dev/null || break
    sleep 0.05
done
r1=$(sed -n 's/.*attempt 2\/4: resuming from step \([0-9]*\) .*/\1/p' "$TMP/launch.log")
if [ -n "$r1" ]; then
    kill_after 2 $((r1 + 4 * (1 + $(rnd 4 2)))) 4 && kills=$((kills + 1))
else
    echo "# the launcher did not rerun after the first kill"
fi
wait $job
rc=$?
touch "$TMP/launch.log"
sed 's/^[0-9-]* [0-9:]* /# /' "$TMP/launch.log"
r2=$(sed -n 's/.*attempt 3\/4: resuming from step \([0-9]*\) .*/\1/p' "$TMP/launch.log")

check "two ranks killed in one job (seed $SEED)" [ $kills = 2 ]
check "the launcher survived both and the job finished (exit $rc)" [ $rc = 0 ]
check "the launcher logged 3 attempts, the first two failing, the reruns resuming (steps ${r1:-?}, ${r2:-?})" \
    sh -c "[ \$(grep -c 'attempt [0-9]/4: ' '$TMP/launch.log') = 3 ] &&
        grep -q 'attempt 1/4 exited with status [1-9]' '$TMP/launch.log' &&
        grep -q 'attempt 2/4 exited with status [1-9]' '$TMP/launch.log' &&
        grep -q 'attempt 3/4 exited with status 0' '$TMP/launch.log' && [ -n '$r1' ] && [ -n '$r2' ]"
check "the servers resumed at the steps the launcher logged" \
    sh -c "grep -q 'resumed at step $r1\$' '$TMP/job.log' && grep -q 'resumed at step $r2\$' '$TMP/job.log'"
check "the final --save is bit-identical to an uninterrupted run's" same_bits "$TMP/ref.st" "$TMP/out.st"
