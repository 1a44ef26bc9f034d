#!/bin/sh
# The ipc data plane, the default when ranks share a host (docs/operations.md,
# "Security"): what guards it, and that it leaves nothing behind.
#
#   1. A default one-host job says "data plane: shm + ipc (peer
#      credentials)" (its tensors through shared memory, test_shm.sh),
#      opens no TCP data port, and its servers' socket files sit in a
#      private folder: mode 0700, ours, under $TMPDIR, named with random
#      hex.
#   2. Another user (nobody, through setpriv) can neither list that folder
#      nor connect(2) to a socket in it (EACCES), while the same probe as
#      our user reaches the socket: the 0700 folder is the first guard.
#      (The second, the peer-credential check against the ranks' pids, is
#      tested by test_security.sh with a same-user intruder, and the uid
#      check on its own by tests/unit/test_transport.c.)
#   3. No socket file or folder outlives the job: after a normal end, a
#      start-up that fails after the servers bound, a worker killed with
#      SIGKILL (mpirun ends the others with SIGTERM), a server that ends
#      the job on --timeout (MPI_Abort), SIGINT to mpirun, once and twice
#      (the second forces it: the ranks get SIGKILL), and the server
#      itself killed with SIGKILL.  Each job gets its own TMPDIR, and the
#      folder it used is checked to have existed (from the server's "data
#      port" line) before it is checked to be gone.
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
JOBPID=""

cleanup() {
    [ -n "$JOBPID" ] && kill -TERM "$JOBPID" 2>/dev/null
    for p in $(pgrep -f "$TMP/" 2>/dev/null); do
        [ "$p" != "$$" ] && kill -KILL "$p" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap 'cleanup' EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

make_csv "$TMP/train.csv" 203 20 4
WF="--progress none --data csv:$TMP/train.csv --model mlp --hidden 48 --batch-size 16"
WF="$WF --no-shuffle --seed 3"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
running() {
    _st=$(ps -o stat= -p "$1" 2>/dev/null)
    [ -n "$_st" ] && [ "${_st#Z}" = "$_st" ]
}

# start NAME "server flags" "worker flags": 1 server and 2 workers in the
# background with TMPDIR=$TMP/NAME.tmp; of the ranks only worker 1 has
# "$TMP/NAME.w1mark" on its command line (mpirun has it too: match
# "^$WORKER ").  JOBPID is the job's (timeout passes signals on).
start() {
    _n=$1
    mkdir -p "$TMP/$_n.tmp"
    rm -f "$TMP/$_n.jsonl"
    # shellcheck disable=SC2086
    TMPDIR="$TMP/$_n.tmp" timeout -k 5 120 mpirun --oversubscribe \
        -np 1 "$SERVER" --endpoint-file "$TMP/$_n.ep" $2 \
        : -np 1 "$WORKER" $WF $3 --metrics "$TMP/$_n.jsonl" \
        : -np 1 "$WORKER" $WF $3 --data-dir "$TMP/$_n.w1mark" >"$TMP/$_n.log" 2>&1 &
    JOBPID=$!
}

# wait_file PATH: until it is non-empty while the job runs (60 s at most).
wait_file() {
    _t0=$(now)
    while [ ! -s "$1" ]; do
        running "$JOBPID" || return 1
        [ "$(since "$_t0" | cut -d. -f1)" -lt 60 ] || return 1
        sleep 0.05
    done
}

# finish: wait for the job; RC its status.
finish() {
    { wait "$JOBPID"; } 2>/dev/null
    RC=$?
    JOBPID=""
}

# folder NAME: the server's private folder, from its "data port" line.
folder() {
    sed -n 's|.*ps-server\[0\]: data port ipc://\([^ ]*\)/0.*|\1|p' "$TMP/$1.log" | head -1
}

# left NAME: what of ps's own is left in the job's TMPDIR.
left() { find "$TMP/$1.tmp" -mindepth 1 -maxdepth 2 -name 'ps-*' 2>/dev/null; }

# clean NAME "what": the job logged its folder, which is gone (within 3 s:
# a server that was killed leaves it to its janitor), and nothing else of
# ours is left.
clean() {
    _f=$(folder "$1")
    _i=0
    while [ -n "$_f" ] && [ -e "$_f" ] && [ $_i -lt 30 ]; do
        sleep 0.1
        _i=$((_i + 1))
    done
    _l=$(left "$1")
    if [ -z "$_f" ]; then
        not_ok "$2: the server logged its ipc folder"
        sed 's/^/#   /' "$TMP/$1.log" | tail -8
    elif [ -e "$_f" ] || [ -n "$_l" ]; then
        not_ok "$2: left behind: $_l"
    else
        ok "$2: its folder ($(basename "$_f")) and socket files are gone"
    fi
}

# --- 1. the default on one host ------------------------------------------------

start normal "" "--epochs 60 --test-delay-ms 10"
if wait_file "$TMP/normal.jsonl"; then
    ok "default one-host job trains"
    ep=$(awk '$1 == 0 { print $2 }' "$TMP/normal.ep")
    dir=$(dirname "${ep#ipc://}")
    check "the endpoint file gives an ipc lane in \$TMPDIR ($ep)" \
        sh -c "case '$ep' in ipc://$TMP/normal.tmp/ps-*/0) exit 0 ;; esac; exit 1"
    check "the socket folder is mode 0700 and ours" \
        [ "$(stat -c '%a %u' "$dir" 2>/dev/null)" = "700 $(id -u)" ]
    check "the socket folder's name has 12 random hex digits and mkdtemp's 6 characters" \
        sh -c "basename '$dir' | grep -Eq '^ps-[0-9a-f]{12}-[A-Za-z0-9]{6}\$'"
    if command -v ss >/dev/null 2>&1; then
        # (Open MPI's own listening sockets in the process are on the
        # wildcard address; a data port never is.)
        tcp_ports=$(ss -Htlnp 2>/dev/null | awk '/"ps-server"/ { print $4 }' |
            grep -v '^0\.0\.0\.0:\|^\[::\]:\|^\*:' | tr '\n' ' ')
        check "ps-server's data port is on no TCP port (${tcp_ports:-none})" [ -z "$tcp_ports" ]
    else
        skip "ps-server's data port is on no TCP port" "no ss"
    fi
    # --- 2. another user ---
    probe='import os, socket, sys
path = sys.argv[1]
try:
    os.listdir(os.path.dirname(path))
    listed = "listed"
except PermissionError:
    listed = "denied"
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(path)
    print(listed, "connected")
except PermissionError:
    print(listed, "EACCES")
except OSError as e:
    print(listed, "error", e.errno)'
    as_nobody=$(setpriv --reuid=nobody --regid=nogroup --clear-groups \
        "$PY" -c "$probe" "${ep#ipc://}" 2>&1)
    as_us=$("$PY" -c "$probe" "${ep#ipc://}" 2>&1)
    echo "# probe as nobody: $as_nobody; as $(id -un): $as_us"
    check "nobody can neither list the folder nor connect to the socket" \
        [ "$as_nobody" = "denied EACCES" ]
    check "control: as our user the same probe lists the folder and connects" \
        [ "$as_us" = "listed connected" ]
else
    not_ok "default one-host job trains"
    sed 's/^/#   /' "$TMP/normal.log" | tail -8
fi
finish
check "the default job exits 0" [ "$RC" = 0 ]
check "its servers say: data plane: shm + ipc (peer credentials) to 2 local workers" \
    grep -q "ps-server\[0\]: data plane: shm + ipc (peer credentials) to 2 local workers" \
    "$TMP/normal.log"
clean normal "normal end"

# --- 3. nothing outlives the job ---------------------------------------------

# A start-up that fails after the servers bound: worker 1's data file is
# missing, which the ports step agrees on.
mkdir -p "$TMP/startfail.tmp"
# shellcheck disable=SC2086
TMPDIR="$TMP/startfail.tmp" timeout -k 5 60 mpirun --oversubscribe \
    -np 1 "$SERVER" : -np 1 "$WORKER" $WF --epochs 1 \
    : -np 1 "$WORKER" --progress none --data "csv:$TMP/nonexistent.csv" \
    >"$TMP/startfail.log" 2>&1
rc=$?
check "a start-up that fails (worker 1's data missing) ends non-zero ($rc) naming the file" \
    sh -c "[ $rc -ne 0 ] && grep -q nonexistent.csv '$TMP/startfail.log'"
clean startfail "failed start-up"

# A worker killed outright.
start wkill "" "--epochs 1000 --test-delay-ms 10"
if wait_file "$TMP/wkill.jsonl"; then
    w1=$(pgrep -f "^$WORKER .*$TMP/wkill.w1mark")
    kill -KILL $w1
    finish
    check "worker 1 SIGKILLed: the job ends non-zero ($RC)" [ "$RC" -ne 0 ]
    clean wkill "worker SIGKILLed"
else
    finish
    not_ok "worker SIGKILL case: job started"
fi

# The server ends the job on --timeout (MPI_Abort) when worker 1 stops.
start wstop "--timeout 3" "--epochs 1000 --test-delay-ms 10"
if wait_file "$TMP/wstop.jsonl"; then
    w1=$(pgrep -f "^$WORKER .*$TMP/wstop.w1mark")
    kill -STOP $w1
    finish
    kill -KILL $w1 2>/dev/null
    check "worker 1 SIGSTOPped: the server ends the job on --timeout ($RC)" \
        sh -c "[ $RC -ne 0 ] && grep -q 'within --timeout 3 s' '$TMP/wstop.log'"
    clean wstop "server MPI_Abort on --timeout"
else
    finish
    not_ok "server timeout case: job started"
fi

# Ctrl-C on mpirun (not through timeout, which would pass it on twice),
# and twice: Open MPI then ends the ranks with SIGKILL.
for n in 1 2; do
    start "sigint$n" "" "--epochs 1000 --test-delay-ms 10"
    if wait_file "$TMP/sigint$n.jsonl"; then
        m=$(pgrep -P "$JOBPID" mpirun)
        kill -INT $m
        [ $n = 2 ] && sleep 0.2 && kill -INT $m
        finish
        check "SIGINT x $n to mpirun ends the job non-zero ($RC)" [ "$RC" -ne 0 ]
        clean "sigint$n" "SIGINT x $n to mpirun"
    else
        finish
        not_ok "SIGINT x $n case: job started"
    fi
done

# The server killed outright: no code of its own runs.
start skill "" "--epochs 1000 --test-delay-ms 10"
if wait_file "$TMP/skill.jsonl"; then
    kill -KILL "$(pgrep -f "^$SERVER --endpoint-file $TMP/skill.ep")"
    finish
    check "the server SIGKILLed: the job ends non-zero ($RC)" [ "$RC" -ne 0 ]
    clean skill "server SIGKILLed"
else
    finish
    not_ok "server SIGKILL case: job started"
fi
