#!/bin/sh
# No silent hangs: a job whose peer goes silent mid-training must end, with
# a non-zero exit and a message saying who went silent, within its
# --timeout plus a margin.  Every case is timed from the moment the peer
# went silent to mpirun's exit; the durations are printed in "# " lines.
#
#   a. worker 1 stopped with SIGSTOP, server --timeout 5 (3 times): the
#      server names worker 1 and its host.
#   b. the server stopped with SIGSTOP, workers --timeout 5 (3 times): a
#      worker says the servers did not answer.
#   c. (root and `ip netns` only, with tests/cluster/netns.sh) worker 1 on
#      its own test host whose link is cut (its veth set down), with the
#      mpirun host's net.ipv4.tcp_retries2 lowered to 4 as
#      docs/operations.md advises (with the default, 15, mpirun itself
#      waits ~15 minutes for the lost daemon after the server has named it).
#   d. case a with --insecure while an unauthenticated client
#      (intruder.py trickle) sends a malformed message every 0.5 s: noise
#      from outside the job must not keep the server from noticing the
#      silent worker.
#
# Processes are found by a marker argument that only they carry (a
# --data-dir on worker 1, an --endpoint-file on the server), stopped and
# resumed by PID; an exit trap resumes and ends whatever is left.
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
INTRUDER="$(dirname "$0")/intruder.py"
T=5 MARGIN=20
LIMIT=$((T + MARGIN))
HOST=$(hostname)
STOPPED="" JOBPID="" TAG="" NETNS=""

# ours PID: the process still runs with this test's files on its command
# line (so a recycled PID is never touched).
ours() { { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null | grep -q "$TMP"; }

# reap PATTERN: end the processes left from one case (by PID).
reap() {
    for _p in $(pgrep -f "$1"); do
        if ours "$_p" && [ "$_p" != "$$" ]; then
            echo "# ended a leftover process: $(ps -o pid=,comm= -p "$_p")"
            kill -CONT "$_p" 2>/dev/null
            kill -KILL "$_p" 2>/dev/null
        fi
    done
}

cleanup() {
    for p in $STOPPED; do
        if ours "$p"; then
            kill -CONT "$p" 2>/dev/null
            kill -KILL "$p" 2>/dev/null
        fi
    done
    [ -n "$JOBPID" ] && kill -TERM "$JOBPID" 2>/dev/null
    [ -n "$TAG" ] && sh "$NETNS" down "$TAG" 2 >/dev/null 2>&1
    rm -rf "$TMP"
}
trap 'cleanup' EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

make_csv "$TMP/train.csv" 203 20 4
# 7 steps per epoch, 10 ms pause per step: far more training than any case
# lasts, so the job can only end early by the failure under test.
WF="--progress none --data csv:$TMP/train.csv --model mlp --hidden 48 --epochs 1000"
WF="$WF --batch-size 16 --no-shuffle --seed 3 --test-delay-ms 10"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# A child that has exited but was not waited for is a zombie: not running.
running() {
    _st=$(ps -o stat= -p "$1" 2>/dev/null)
    [ -n "$_st" ] && [ "${_st#Z}" = "$_st" ]
}

# start_job NAME mpirun-args...: in the background, JOBPID; hard limit 150 s.
start_job() {
    _n=$1
    shift
    rm -f "$TMP/$_n.jsonl"
    timeout -k 5 150 "$@" >"$TMP/$_n.log" 2>&1 &
    JOBPID=$!
}

# started NAME: wait until worker 0 has finished an epoch (so every rank is
# training); fails when the job ends first or after 60 s.
started() {
    _t0=$(now)
    while [ ! -s "$TMP/$1.jsonl" ]; do
        running "$JOBPID" || return 1
        [ "$(since "$_t0" | cut -d. -f1)" -lt 60 ] || return 1
        sleep 0.05
    done
}

# pid_of REGEX: the one process whose command line matches.
pid_of() {
    _p=$(pgrep -f "$1")
    [ "$(echo "$_p" | grep -c .)" = 1 ] && echo "$_p"
}

# tree PID: PID and its descendants, one "pid state command" line each.
tree() {
    ps -o pid=,stat=,comm= -p "$1" 2>/dev/null
    for _c in $(pgrep -P "$1"); do
        tree "$_c"
    done
}

# finish T0: wait for the job, ending it at LIMIT + 1 s after T0; sets RC
# (124 when it had to be ended) and DT (seconds since T0).
finish() {
    _killed=0
    while running "$JOBPID"; do
        if awk -v d="$(since "$1")" -v l=$LIMIT 'BEGIN { exit !(d > l + 1) }'; then
            _killed=1
            DT=$(since "$1")
            tree "$JOBPID" | sed 's/^/#   still running: /'
            kill -TERM "$JOBPID" 2>/dev/null
            for p in $STOPPED; do ours "$p" && kill -CONT "$p" 2>/dev/null; done
            break
        fi
        sleep 0.1
    done
    [ $_killed = 1 ] || DT=$(since "$1")
    # (mpirun may crash when ended this way; the shell need not say so)
    { wait "$JOBPID"; } 2>/dev/null
    RC=$?
    JOBPID=""
    [ $_killed = 1 ] && RC=124
}

# show LOG: the last lines of a job log that are not a backtrace or blank.
show() {
    grep -v '^\[.*\] *\[ *[0-9]*\]\|^ *$\|^-*$' "$1" | tail -8 | sed 's/^/#   /'
}

# verdict "what" NAME REGEX: ok when the job ended non-zero within LIMIT
# with a line matching REGEX.
verdict() {
    _d=$1 _n=$2 _re=$3
    echo "# $_d: exit status $RC after $DT s"
    if [ $RC -eq 0 ] || [ $RC -eq 124 ] || [ $RC -eq 137 ] ||
        awk -v d="$DT" -v l=$LIMIT 'BEGIN { exit !(d > l) }'; then
        not_ok "$_d: ended non-zero within $LIMIT s (status $RC after $DT s)"
        show "$TMP/$_n.log"
        return 1
    fi
    if ! grep -Eq -- "$_re" "$TMP/$_n.log"; then
        not_ok "$_d: no message matching /$_re/"
        show "$TMP/$_n.log"
        return 1
    fi
    ok "$_d: ended in $DT s (limit $LIMIT s), message: $(grep -Eo -- "$_re.*" "$TMP/$_n.log" | head -1)"
}

# stop_case NAME "what" MARKER-REGEX MESSAGE-REGEX "server flags" "worker
# flags": start the job, SIGSTOP the process matching MARKER-REGEX
# mid-training, time the end.
stop_case() {
    _n=$1 _what=$2 _mark=$3 _re=$4 _sf=$5 _wf=$6
    # shellcheck disable=SC2086
    start_job "$_n" mpirun --oversubscribe \
        -np 1 "$SERVER" --endpoint-file "$TMP/$_n.srvmark" $_sf \
        : -np 1 "$WORKER" $WF $_wf --metrics "$TMP/$_n.jsonl" \
        : -np 1 "$WORKER" $WF $_wf --data-dir "$TMP/$_n.w1mark"
    if ! started "$_n"; then
        not_ok "$_what: job started training"
        finish "$(now)"
        sed 's/^/#   /' "$TMP/$_n.log" | tail -8
        return 1
    fi
    _pid=$(pid_of "$_mark")
    if [ -z "$_pid" ]; then
        not_ok "$_what: found the process to stop (/$_mark/)"
        pgrep -af "$TMP/$_n" | sed 's/^/#   /'
        finish "$(now)"
        return 1
    fi
    _t0=$(now)
    kill -STOP "$_pid"
    STOPPED="$STOPPED $_pid"
    finish "$_t0"
    ours "$_pid" && kill -CONT "$_pid" 2>/dev/null
    verdict "$_what" "$_n" "$_re"
    _v=$?
    reap "^($WORKER|$SERVER|mpirun) .*$TMP/$_n\\."
    return $_v
}

# a: only the server has --timeout T (the running worker waits with the
# default 300 s, so it cannot end the job first); a stopped worker's step
# is never complete, so the server hears nothing for T s.  b: only the
# workers have it.
A_RE="no message from worker 1 \\(host $HOST\\) within --timeout $T s"
B_RE="no answer from the servers for $T s while waiting for"
durs_a="" durs_b="" n_a=0 n_b=0
for i in 1 2 3; do
    # Only worker 1's process has "$TMP/wstop$i.w1mark" on its command
    # line (mpirun's has it too, hence the anchor on the binary).
    stop_case "wstop$i" "worker 1 SIGSTOPped, server --timeout $T (run $i/3)" \
        "^$WORKER .*$TMP/wstop$i\\.w1mark" "$A_RE" "--timeout $T" "" && n_a=$((n_a + 1))
    durs_a="$durs_a $DT"
done
for i in 1 2 3; do
    stop_case "sstop$i" "server SIGSTOPped, workers --timeout $T (run $i/3)" \
        "^$SERVER .*$TMP/sstop$i\\.srvmark" "$B_RE" "" "--timeout $T" && n_b=$((n_b + 1))
    durs_b="$durs_b $DT"
done
echo "# stopped worker: $n_a/3 runs ended in time; durations (s):$durs_a"
echo "# stopped server: $n_b/3 runs ended in time; durations (s):$durs_b"

# --- c. a cut link between two test hosts ------------------------------------

netns_skip() {
    skip "cut link: default settings" "$1"
    skip "cut link: tcp_retries2=4 on the mpirun host" "$1"
}

# cut_case NAME "what" "setup command on host 1": server + worker 0 on host
# 1 (which runs mpirun), worker 1 on host 2; host 2's veth goes down
# mid-training.
cut_case() {
    _n=$1 _what=$2
    if ! sh "$NETNS" up "$TAG" 2 "$SUBNET" >"$TMP/up.log" 2>&1; then
        not_ok "$_what: test hosts up"
        sed 's/^/#   /' "$TMP/up.log"
        return 1
    fi
    [ -n "$3" ] && ip netns exec "$H1" sh -c "$3"
    # shellcheck disable=SC2086
    start_job "$_n" sh "$NETNS" exec "$H1" mpirun \
        --mca plm_rsh_agent "sh $CLUSTER/rsh-agent.sh" --mca plm_rsh_no_tree_spawn 1 \
        --mca routed direct --mca btl tcp,self \
        --mca btl_tcp_if_include "$SUBNET.0/24" --mca oob_tcp_if_include "$SUBNET.0/24" \
        -np 1 --host "$H1:2" "$ABS_SERVER" --timeout $T \
        : -np 1 --host "$H1:2" "$ABS_WORKER" $WF --metrics "$TMP/$_n.jsonl" \
        : -np 1 --host "$H2:1" "$ABS_WORKER" $WF
    if ! started "$_n"; then
        not_ok "$_what: job started training"
        finish "$(now)"
        sed 's/^/#   /' "$TMP/$_n.log" | tail -8
        sh "$NETNS" down "$TAG" 2 >/dev/null 2>&1
        return 1
    fi
    _t0=$(now)
    ip link set "psv2-$TAG" down
    finish "$_t0"
    # Whatever happened, the host named in the server's message must be the
    # cut one; then the job must have ended.
    if grep -q "no message from worker 1 (host $H2) within --timeout $T s" "$TMP/$_n.log"; then
        ok "$_what: the server names worker 1 (host $H2)"
    else
        not_ok "$_what: the server names worker 1 (host $H2)"
    fi
    verdict "$_what" "$_n" "no message from worker 1 \\(host $H2\\)|lost communication"
    _v=$?
    sh "$NETNS" down "$TAG" 2 >/dev/null 2>&1
    return $_v
}

CLUSTER=$(cd "$(dirname "$0")/../cluster" 2>/dev/null && pwd)
NETNS="$CLUSTER/netns.sh"
if [ "$(id -u)" != 0 ]; then
    netns_skip "needs root to make network namespaces"
elif [ ! -f "$NETNS" ] || [ ! -f "$CLUSTER/rsh-agent.sh" ]; then
    netns_skip "no tests/cluster/netns.sh harness"
elif ! command -v ip >/dev/null 2>&1 || ! command -v unshare >/dev/null 2>&1; then
    netns_skip "no ip or unshare on PATH"
elif ! ip netns add "pshprobe-$$" 2>"$TMP/probe.err"; then
    netns_skip "ip netns does not work here: $(head -1 "$TMP/probe.err")"
else
    ip netns del "pshprobe-$$"
    TAG=hg$$ # interface names: at most 10 characters of tag
    SUBNET=10.232.$(($$ % 200 + 20))
    H1=psh1-$TAG H2=psh2-$TAG
    ABS_SERVER=$(cd "$(dirname "$SERVER")" && pwd)/$(basename "$SERVER")
    ABS_WORKER=$(cd "$(dirname "$WORKER")" && pwd)/$(basename "$WORKER")
    export OMPI_MCA_orte_tmpdir_base="$TMP"
    # With the kernel's defaults, mpirun (after the server's MPI_Abort)
    # keeps trying to reach the daemon on the cut host until TCP gives up
    # (net.ipv4.tcp_retries2 = 15: about 15 minutes) although the server
    # named the lost host within --timeout.  That is a launcher/OS setting,
    # documented in docs/operations.md ("A host that disappears"); the
    # documented configuration is what is tested.
    skip "cut link with the kernel's default TCP retries" \
        "mpirun waits ~15 min for the cut host's daemon; see docs/operations.md"
    cut_case cut2 "cut link: tcp_retries2=4 on the mpirun host" \
        "sysctl -q -w net.ipv4.tcp_retries2=4"
    if left=$(sh "$NETNS" left "$TAG" 2); then
        TAG=""
    else
        echo "# left behind: $left"
    fi
fi

# --- d. a silent worker behind unauthenticated noise --------------------------

if ! "$PY" -c 'import zmq' 2>/dev/null; then
    skip "stopped worker behind unauthenticated noise" "$PY has no zmq module"
else
    "$PY" "$INTRUDER" trickle --endpoint-file "$TMP/noise.srvmark" \
        --stop-file "$TMP/noise.stop" --report "$TMP/noise.json" --interval 0.5 \
        --max-seconds 120 >"$TMP/noise.intruder.log" 2>&1 &
    ipid=$!
    stop_case noise "worker 1 SIGSTOPped while a client sends garbage every 0.5 s (--insecure)" \
        "^$WORKER .*$TMP/noise\\.w1mark" "$A_RE" "--timeout $T --insecure" ""
    touch "$TMP/noise.stop"
    wait "$ipid"
    echo "# noise: $(sed -n 's/.*"sent": \([0-9]*\).*/\1/p' "$TMP/noise.json" 2>/dev/null) garbage messages sent"
fi
