#!/bin/sh
# Signals and aborts end the job promptly, non-zero, and leave no file
# behind in TMPDIR (the servers' ipc socket files, the endpoint file, temp
# files): every job runs with its own TMPDIR folder, checked afterwards.
#
#   a. SIGINT to mpirun mid-training (Open MPI forwards it to the ranks as
#      SIGTERM 1 s later, then SIGKILL 1 s after that): the job ends within
#      a few seconds; with --checkpoint-dir (and --checkpoint-every too
#      large to have written one) a final checkpoint exists, and resuming
#      from it gives a --save bit-identical to an uninterrupted run.
#   b. SIGTERM to mpirun, no checkpoints, one server.
#   c. an abort on a NaN gradient (--on-nonfinite abort, MPI_Abort).
#   d. SIGKILL of a worker (which cannot clean up; workers own no files):
#      the job ends, and the survivors leave nothing.
#   e. a server's own abort: worker 1 stopped (SIGSTOP), the server names
#      it after --timeout 3 and calls MPI_Abort.
. "$(dirname "$0")/lib.sh"

make_csv "$TMP/d.csv" 240 12 3
# 10 epochs x 12 steps of >= 45 ms: about 6 s of training.
W="--data csv:$TMP/d.csv --model mlp --hidden 300 --batch-size 10 --epochs 10 --seed 9"
SRV="--chunk-kib 4 --momentum 0.9 --nesterov --checkpoint-every 1000"

# leftovers DIR: what a job left in its TMPDIR (ps-* files: sockets,
# endpoint file, temp files), as "# " lines; fails when there is any.
leftovers() {
    _left=$(ls -A "$1" | grep '^ps-')
    [ -z "$_left" ] && return 0
    echo "$_left" | sed 's/^/# left behind: /'
    return 1
}

# start_job NAME SERVERS "server flags" "worker flags": a job in the
# background with its own TMPDIR ($TMP/NAME) and endpoint file in it;
# JOB is mpirun's PID, the log $TMP/NAME.log.
start_job() {
    mkdir -p "$TMP/$1"
    # shellcheck disable=SC2086
    TMPDIR="$TMP/$1" timeout -k 5 120 mpirun --oversubscribe -np "$2" "$SERVER" --quiet $3 \
        --endpoint-file "$TMP/$1/ps-endpoints" : -np 2 "$WORKER" --progress none $4 \
        >"$TMP/$1.log" 2>&1 &
    JOB=$!
}

# training NAME: wait (up to 60 s) until worker 0 reported an epoch, then
# a moment that varies from run to run.
training() {
    for _ in $(seq 1 1200); do
        [ -s "$TMP/$1.metrics" ] && break
        sleep 0.05
    done
    sleep "0.$(awk 'BEGIN { srand(); printf "%d", rand() * 4 }')"
}

# stop NAME SIGNAL: signal mpirun itself (timeout(1) would signal it twice,
# directly and through its process group, and a second signal makes mpirun
# exit at once, orphaning the ranks), wait; RC its status, DT the seconds
# taken.
stop() {
    _mpirun=$(pgrep -P "$JOB" -x mpirun)
    _t0=$(date +%s.%N)
    kill "-$2" "$_mpirun"
    wait "$JOB"
    RC=$?
    DT=$(awk -v a="$_t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    echo "# $1: exit $RC after $DT s"
    grep -m3 -E "stopped|error" "$TMP/$1.log" | sed 's/^/#   /'
}

psrun 120 2 "$SRV --checkpoint-dir $TMP/ref.ck --save $TMP/ref.st" 2 "$W" "$TMP/ref.log" ||
    not_ok "uninterrupted reference run"

# a. SIGINT, with a checkpoint folder.
start_job int 2 "$SRV --checkpoint-dir $TMP/int.ck" \
    "$W --test-delay-ms 45 --metrics $TMP/int.metrics"
training int
stop int INT
check "SIGINT to mpirun: the job ends within 6 s, non-zero (exit $RC, $DT s)" \
    sh -c "[ $RC -ne 0 ] && [ $RC -ne 124 ] && awk 'BEGIN { exit !($DT <= 6) }'"
check "SIGINT to mpirun: no ps-* file left in TMPDIR" leftovers "$TMP/int"
check "SIGINT to mpirun: every rank says it stopped" \
    sh -c "[ \$(grep -c 'stopped by SIGTERM' '$TMP/int.log') -eq 4 ]"
ck=$(ls -d "$TMP"/int.ck/step-* 2>/dev/null | tail -n 1)
check "SIGINT to mpirun: a final checkpoint is written ($(basename "${ck:-none}"); every 1000 steps would give none)" \
    sh -c "[ -n '$ck' ] && [ -f '$ck/MANIFEST' ] && grep -q 'final checkpoint: step' '$TMP/int.log'"
timeout -k 5 120 mpirun --oversubscribe -np 2 "$SERVER" $SRV --checkpoint-dir "$TMP/int.ck" \
    --resume "$TMP/int.ck" --save "$TMP/int.st" : -np 2 "$WORKER" --progress none $W \
    >"$TMP/int-resume.log" 2>&1
check "SIGINT to mpirun: resumed from the final checkpoint, --save is bit-identical" \
    sh -c "grep -q 'resumed at step' '$TMP/int-resume.log' && cmp -s '$TMP/ref.st' '$TMP/int.st'"

# b. SIGTERM, one server, no checkpoints.
start_job term 1 "" "$W --test-delay-ms 45 --metrics $TMP/term.metrics"
training term
stop term TERM
check "SIGTERM to mpirun: the job ends within 6 s, non-zero (exit $RC, $DT s)" \
    sh -c "[ $RC -ne 0 ] && [ $RC -ne 124 ] && awk 'BEGIN { exit !($DT <= 6) }'"
check "SIGTERM to mpirun: no ps-* file left in TMPDIR" leftovers "$TMP/term"

# c. An abort on a NaN gradient.
mkdir -p "$TMP/nan"
TMPDIR="$TMP/nan" timeout -k 5 60 mpirun --oversubscribe -np 2 "$SERVER" --quiet \
    --endpoint-file "$TMP/nan/ps-endpoints" : -np 1 "$WORKER" --progress none $W : \
    -np 1 "$WORKER" --progress none $W --test-nan-step 5 >"$TMP/nan.log" 2>&1
rc=$?
check "NaN abort: the job ends non-zero (exit $rc)" \
    sh -c "[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'non-finite gradient' '$TMP/nan.log'"
check "NaN abort: no ps-* file left in TMPDIR" leftovers "$TMP/nan"

# d. SIGKILL of a worker: its job ends (mpirun ends the others; the
# servers' --timeout would too), the survivors clean up.
start_job kill 2 "--timeout 10" "$W --test-delay-ms 45 --metrics $TMP/kill.metrics"
training kill
victim=$(pgrep -f "^$WORKER .*$TMP/kill.metrics" | head -n 1)
t0=$(date +%s)
kill -KILL "$victim"
wait "$JOB"
rc=$?
dt=$(($(date +%s) - t0))
echo "# kill: worker pid $victim killed, exit $rc after $dt s"
check "SIGKILL of a worker: the job ends non-zero within 20 s (exit $rc, $dt s)" \
    sh -c "[ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $dt -le 20 ]"
check "SIGKILL of a worker: no ps-* file left in TMPDIR" leftovers "$TMP/kill"

# e. The server's own abort (ps_boot_abort) after --timeout.
start_job abort 1 "--timeout 3" "$W --test-delay-ms 45 --metrics $TMP/abort.metrics"
training abort
stopped=$(pgrep -f "^$WORKER .*$TMP/abort.metrics" | tail -n 1)
kill -STOP "$stopped"
wait "$JOB"
rc=$?
kill -CONT "$stopped" 2>/dev/null # mpirun resumes it to end it; in case not
echo "# abort: worker pid $stopped stopped, exit $rc"
grep -m1 "within --timeout" "$TMP/abort.log" | sed 's/^/#   /'
check "server abort after --timeout: the job ends non-zero, naming the silent worker (exit $rc)" \
    sh -c "[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'no message from worker' '$TMP/abort.log'"
check "server abort after --timeout: no ps-* file left in TMPDIR" leftovers "$TMP/abort"
