#!/bin/sh
# The shared-memory data plane (--transport shm, the one-host default):
#   a. while a job trains, its segment has no name any more (unlinked once
#      every worker mapped it) and the server still maps it, deleted;
#   b. SIGSTOP of a worker / of the server, SIGKILL of a worker / of the
#      server mid-training: the job ends non-zero within --timeout plus a
#      margin, naming the silent peer (STOP), and no segment is left;
#   c. the server killed outright (SIGKILL) while its segment still has a
#      name (start-up): the janitor removes it;
#   d. a full tmpfs: /dev/shm a 256 KiB tmpfs (a private mount namespace,
#      root only) or PS_SHM_DIR a folder that does not exist: the job falls
#      back to ipc with a warning naming the bytes needed, and its model is
#      the ipc job's, bit for bit;
#   e. ssp with two workers (one slow, so slots are reused while held) and
#      async with two workers run over shm to the end with nothing refused.
# (Equivalence with sockets is in test_equivalence.sh; another uid being
# refused the segment in tests/unit/test_shm.c.)
. "$(dirname "$0")/lib.sh"

T=5 MARGIN=20
LIMIT=$((T + MARGIN))
HOST=$(hostname)
JOBPID="" STOPPED=""
SHMD="$TMP/shm"
mkdir -p "$SHMD"
export PS_SHM_DIR="$SHMD"

ours() { { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null | grep -q "$TMP"; }
cleanup() {
    for p in $STOPPED; do
        ours "$p" && { kill -CONT "$p"; kill -KILL "$p"; } 2>/dev/null
    done
    [ -n "$JOBPID" ] && kill -TERM "$JOBPID" 2>/dev/null
    rm -rf "$TMP"
}
trap 'cleanup' EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

make_csv "$TMP/train.csv" 203 20 4
WF="--progress none --data csv:$TMP/train.csv --model mlp --hidden 48 --epochs 1000"
WF="$WF --batch-size 16 --no-shuffle --seed 3 --test-delay-ms 10"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
running() {
    _st=$(ps -o stat= -p "$1" 2>/dev/null)
    [ -n "$_st" ] && [ "${_st#Z}" = "$_st" ]
}
pid_of() {
    _p=$(pgrep -f "$1")
    [ "$(echo "$_p" | grep -c .)" = 1 ] && echo "$_p"
}
no_segment() { [ -z "$(ls -A "$SHMD")" ]; }

# start NAME "server flags": 1 server, 2 workers over shm, in the
# background; worker 1 carries a marker (--data-dir), the server one too.
start() {
    # shellcheck disable=SC2086
    timeout -k 5 150 mpirun --oversubscribe -np 1 "$SERVER" --transport shm \
        --endpoint-file "$TMP/$1.srvmark" $2 \
        : -np 1 "$WORKER" $WF ${3:-} --metrics "$TMP/$1.jsonl" \
        : -np 1 "$WORKER" $WF ${3:-} --data-dir "$TMP/$1.w1mark" >"$TMP/$1.log" 2>&1 &
    JOBPID=$!
}
# training NAME: worker 0 finished an epoch (every rank trains).
training() {
    _t0=$(now)
    while [ ! -s "$TMP/$1.jsonl" ]; do
        running "$JOBPID" || return 1
        [ "$(since "$_t0" | cut -d. -f1)" -lt 60 ] || return 1
        sleep 0.05
    done
}
# finish T0: wait for the job (ending it after LIMIT + 1 s); RC, DT.
finish() {
    RC=""
    while running "$JOBPID"; do
        if awk -v d="$(since "$1")" -v l=$LIMIT 'BEGIN { exit !(d > l + 1) }'; then
            kill -TERM "$JOBPID" 2>/dev/null
            for p in $STOPPED; do ours "$p" && kill -CONT "$p" 2>/dev/null; done
            RC=124
            break
        fi
        sleep 0.1
    done
    DT=$(since "$1")
    { wait "$JOBPID"; } 2>/dev/null
    _rc=$?
    RC=${RC:-$_rc}
    JOBPID=""
}
reap() {
    for _p in $(pgrep -f "$TMP/$1\\."); do
        ours "$_p" && [ "$_p" != "$$" ] && { kill -CONT "$_p"; kill -KILL "$_p"; } 2>/dev/null
    done
}

# a. The segment during training.
start life "--timeout 60"
if training life; then
    srv=$(pid_of "^$SERVER .*$TMP/life.srvmark")
    check "a. while training: the segment's name is gone (unlinked once mapped)" no_segment
    check "a. ... and the server still maps it (deleted)" \
        grep -q "$SHMD/ps-shm-[0-9a-f]\{24\} (deleted)" "/proc/$srv/maps"
    check "a. the server says its workers use shm" \
        grep -q "data plane: shm + ipc (peer credentials) to 2 local workers" "$TMP/life.log"
else
    not_ok "a. the job trained"
    tail -5 "$TMP/life.log" | sed 's/^/#   /'
fi
kill -TERM "$JOBPID" 2>/dev/null
finish "$(now)"
reap life

# b. A peer stopped or killed mid-training.
# fault NAME "what" SIGNAL MARKER "server flags" "worker flags" MESSAGE-REGEX
fault() {
    start "$1" "$5" "$6"
    if ! training "$1"; then
        not_ok "$2: the job trained"
        finish "$(now)"
        reap "$1"
        return
    fi
    _pid=$(pid_of "$4")
    _t0=$(now)
    kill "-$3" "$_pid"
    [ "$3" = STOP ] && STOPPED="$STOPPED $_pid"
    finish "$_t0"
    ours "$_pid" && kill -CONT "$_pid" 2>/dev/null
    reap "$1"
    echo "# $2: exit status $RC after $DT s"
    if [ "$RC" -eq 0 ] || [ "$RC" -eq 124 ] ||
        awk -v d="$DT" -v l=$LIMIT 'BEGIN { exit !(d > l) }'; then
        not_ok "$2: ended non-zero within $LIMIT s (status $RC after $DT s)"
        tail -8 "$TMP/$1.log" | sed 's/^/#   /'
    elif [ -n "$7" ] && ! grep -Eq -- "$7" "$TMP/$1.log"; then
        not_ok "$2: a message matching /$7/"
        tail -8 "$TMP/$1.log" | sed 's/^/#   /'
    else
        ok "$2: ended in $DT s (limit $LIMIT s)"
    fi
    sleep 0.5 # the janitors
    check "$2: no segment left" no_segment
}
W1="^$WORKER .*$TMP/%s.w1mark"
SV="^$SERVER .*$TMP/%s.srvmark"
# shellcheck disable=SC2059
{
    fault wstop "b. worker 1 SIGSTOPped (server --timeout $T)" STOP "$(printf "$W1" wstop)" \
        "--timeout $T" "" "no message from worker 1 \\(host $HOST\\) within --timeout $T s"
    fault sstop "b. the server SIGSTOPped (workers --timeout $T)" STOP "$(printf "$SV" sstop)" \
        "" "--timeout $T" "no answer from the servers for $T s while waiting for"
    fault wkill "b. worker 1 SIGKILLed" KILL "$(printf "$W1" wkill)" "--timeout $T" "" ""
    fault skill "b. the server SIGKILLed" KILL "$(printf "$SV" skill)" "" "--timeout $T" ""
}

# c. The server killed while the segment still has its name: at start-up,
# between its creation (step "flags") and every worker's first training
# message.  Worker 1 is stopped as soon as the segment appears (it loads a
# large data set, so it is still in the start-up then), which holds the
# segment's name; then the server is killed outright.
make_csv "$TMP/big.csv" 60000 20 4
janitor_case() {
    # shellcheck disable=SC2086
    timeout -k 5 60 mpirun --oversubscribe -np 1 "$SERVER" --transport shm \
        --endpoint-file "$TMP/jan$1.srvmark" \
        : -np 1 "$WORKER" --progress none --data "csv:$TMP/big.csv" --model mlp --hidden 48 \
        --epochs 1 \
        : -np 1 "$WORKER" --progress none --data "csv:$TMP/big.csv" --model mlp --hidden 48 \
        --epochs 1 --data-dir "$TMP/jan$1.w1mark" >"$TMP/jan$1.log" 2>&1 &
    JOBPID=$!
    _t0=$(now) _w1="" _rv=1
    while [ -z "$_w1" ] || no_segment; do
        running "$JOBPID" || break
        [ "$(since "$_t0" | cut -d. -f1)" -lt 30 ] || break
        _w1=$(pid_of "^$WORKER .*$TMP/jan$1.w1mark")
        sleep 0.01
    done
    if [ -n "$_w1" ] && kill -STOP "$_w1" 2>/dev/null; then
        STOPPED="$STOPPED $_w1"
        sleep 0.3 # were it past its first training message, the name would go now
        _srv=$(pid_of "^$SERVER .*$TMP/jan$1.srvmark")
        if ! no_segment && [ -n "$_srv" ] && kill -KILL "$_srv" && ! no_segment; then
            _rv=0 # the server died with its segment still named
        fi
        kill -KILL "$_w1" 2>/dev/null
        kill -CONT "$_w1" 2>/dev/null
    fi
    kill -TERM "$JOBPID" 2>/dev/null
    finish "$(now)"
    reap "jan$1"
    sleep 1 # the janitor's shell
    return $_rv
}
caught=0
for i in 1 2 3; do
    if janitor_case "$i"; then
        caught=1
        break
    fi
    echo "# try $i did not catch the server with its segment named"
    rm -f "$SHMD"/* 2>/dev/null
done
if [ $caught = 1 ]; then
    check "c. the server SIGKILLed while its segment had a name: the janitor removed it" no_segment
else
    not_ok "c. caught the server with its segment still named (3 tries)"
fi
rm -f "$SHMD"/* 2>/dev/null

# d. No room for the segment.
SRVF="--lr 0.1 --momentum 0.9 --chunk-kib 64"
DF="--data csv:$TMP/train.csv --model mlp --hidden 1000 --epochs 2 --batch-size 32 --seed 3"
psrun 120 1 "$SRVF --save $TMP/ipc.st --transport ipc" 2 "$DF" "$TMP/ipc.log" ||
    not_ok "d. the ipc reference job ran"
PS_SHM_DIR=/nonexistent/ps-shm psrun 120 1 "$SRVF --save $TMP/nodir.st" 2 "$DF" "$TMP/nodir.log"
rc=$?
check "d. PS_SHM_DIR that does not exist: the job runs (exit $rc) ..." [ $rc -eq 0 ]
check "d. ... warning that the workers use ipc, naming the folder" \
    grep -q "WARNING: shared memory: cannot create a segment in /nonexistent/ps-shm: .*the workers on this host use ipc" \
    "$TMP/nodir.log"
check "d. ... and gives the ipc job's model, bit for bit" same_bits "$TMP/ipc.st" "$TMP/nodir.st"
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
    # 2 workers x (1 push slot + 1 reply) x 25k floats: ~400 KB > 256 KiB.
    # Open MPI's own shared memory (vader) needs /dev/shm: tcp between ranks.
    # shellcheck disable=SC2016
    unshare -m sh -c 'mount -t tmpfs -o size=256k ps-test-tiny /dev/shm || exit 99
        export OMPI_MCA_btl=self,tcp PS_SHM_DIR=
        timeout -k 5 120 mpirun --oversubscribe -np 1 "$1" $2 --save "$3/full.st" \
            : -np 2 "$4" --progress none $5 >"$3/full.log" 2>&1' \
        sh "$SERVER" "$SRVF" "$TMP" "$WORKER" "$DF"
    rc=$?
    if [ $rc -eq 99 ]; then
        skip "d. /dev/shm full" "cannot mount a tmpfs here"
    else
        check "d. /dev/shm a full 256 KiB tmpfs: the job runs (exit $rc) ..." [ $rc -eq 0 ]
        check "d. ... warning naming the bytes needed, the workers on ipc" \
            grep -q "WARNING: shared memory: a segment of [0-9]* bytes ([0-9.]* MiB) does not fit in /dev/shm: .*the workers on this host use ipc" \
            "$TMP/full.log"
        check "d. ... each worker says it uses ipc" \
            sh -c "[ \$(grep -c 'has no shared memory for this worker: its tensors go over ipc' '$TMP/full.log') -eq 2 ]"
        check "d. ... and gives the ipc job's model, bit for bit" same_bits "$TMP/ipc.st" "$TMP/full.st"
    fi
else
    skip "d. /dev/shm full" "needs root and unshare -m for a private tmpfs"
fi

# e. ssp and async with two workers, one slow.
modes() { # name "server flags"
    # shellcheck disable=SC2086
    timeout -k 5 120 mpirun --oversubscribe -np 2 "$SERVER" $SRVF --transport shm $2 \
        : -np 1 "$WORKER" --progress none $DF --test-delay-ms 3 \
        : -np 1 "$WORKER" --progress none $DF >"$TMP/$1.log" 2>&1
}
modes ssp "--mode ssp --staleness 2"
rc=$?
check "e. ssp (staleness 2, one worker slow) over shm ran (exit $rc)" [ $rc -eq 0 ]
check "e. ... nothing refused, staleness at most 2" \
    sh -c "! grep -q 'rejected (' '$TMP/ssp.log' && grep 'staleness of applied pushes: max' '$TMP/ssp.log' | grep -q 'max [012],'"
modes async "--mode async"
rc=$?
check "e. async (one worker slow) over shm ran (exit $rc), nothing refused" \
    sh -c "[ $rc -eq 0 ] && ! grep -q 'rejected (' '$TMP/async.log'"
check "no segment left by any job" no_segment
