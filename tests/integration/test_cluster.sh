#!/bin/sh
# Multi-host jobs on one machine.  Three test hosts are Linux network
# namespaces on a private bridge (tests/cluster/netns.sh), each with its own
# hostname, so Open MPI and ps-server see three hosts.  mpirun runs on host
# 1 and starts the other hosts' daemons through an rsh agent that enters
# their namespace (tests/cluster/rsh-agent.sh), the way it would use ssh.
#
# Checked: a job with the servers on one host and the workers on the others
# gives the same model, bit for bit, as the same job on one host; so does a
# job with the servers and worker 0 on host 1 and worker 1 on host 2, where
# worker 0 talks to the servers over shared memory (headers over ipc) and
# worker 1 over tcp (the servers bind both and say so); --transport ipc with a worker on another
# host fails at once naming both ranks and hosts; the
# servers advertise the subnet address by default, --iface and --bind work,
# a wrong --iface fails fast naming it, an unreachable advertised address
# ends the job instead of hanging; the bytes each step moves match the
# sizing model of docs/operations.md (2 x model bytes per worker), with the
# throughput reported in "# " lines.  Everything is torn down on exit, also
# on failure or interruption.
#
# Needs root and a working `ip netns`; prints one SKIP line otherwise.
. "$(dirname "$0")/lib.sh"

skip_all() {
    echo "ok 1 - multi-host jobs # SKIP $1"
    exit 0
}

[ "$(id -u)" = 0 ] || skip_all "needs root to make network namespaces"
for c in ip unshare mpirun timeout ss; do
    command -v "$c" >/dev/null 2>&1 || skip_all "no '$c' on PATH"
done
if [ ! -x "$SERVER" ] || [ ! -x "$WORKER" ]; then
    skip_all "no $SERVER or $WORKER (run make)"
fi

CLUSTER=$(cd "$(dirname "$0")/../cluster" && pwd)
NETNS="$CLUSTER/netns.sh"
AGENT="$CLUSTER/rsh-agent.sh"
ABS_SERVER=$(cd "$(dirname "$SERVER")" && pwd)/$(basename "$SERVER")
ABS_WORKER=$(cd "$(dirname "$WORKER")" && pwd)/$(basename "$WORKER")
TAG=$$
# A private /24 that exists only on this test's bridge; the octet varies
# with the PID so logs of concurrent runs are told apart.
SUBNET=10.231.$((TAG % 200 + 20))
CIDR=$SUBNET.0/24
H1=psh1-$TAG H2=psh2-$TAG H3=psh3-$TAG
SAMPLERS=""

cleanup() {
    [ -n "$SAMPLERS" ] && sampler_stop
    sh "$NETNS" down "$TAG" 3 >/dev/null 2>&1
    rm -rf "$TMP"
}
trap 'cleanup' EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

# Hosts left by an earlier run that was killed outright (SIGKILL runs no
# trap): their tag is the PID of a test that no longer exists, and nothing
# runs in them.
for stale in $(ip netns list 2>/dev/null | sed -n 's/^psh1-\([0-9][0-9]*\)\( .*\)\{0,1\}$/\1/p'); do
    if ! kill -0 "$stale" 2>/dev/null && [ -z "$(ip netns pids "psh1-$stale" 2>/dev/null)" ]; then
        sh "$NETNS" down "$stale" 3 >/dev/null 2>&1
        echo "# removed test hosts left by run $stale"
    fi
done

if ! ip netns add "psprobe-$TAG" 2>"$TMP/probe.err"; then
    skip_all "ip netns does not work here: $(head -1 "$TMP/probe.err")"
fi
ip netns del "psprobe-$TAG"

# --- the test hosts --------------------------------------------------------

if sh "$NETNS" up "$TAG" 3 "$SUBNET" >"$TMP/up.log" 2>&1; then
    ok "3 test hosts ($H1 $H2 $H3) on a private bridge, subnet $CIDR"
else
    not_ok "3 test hosts on a private bridge"
    sed 's/^/#   /' "$TMP/up.log"
    exit 1
fi

# Each host must see its own name and only its own subnet address, or the
# placement tests below would prove nothing.
views_ok=1
i=1
for h in $H1 $H2 $H3; do
    v=$(sh "$NETNS" exec "$h" sh -c 'hostname; ip -4 -o addr show scope global' 2>&1)
    echo "$v" | head -1 | grep -qx "$h" || views_ok=0
    [ "$(echo "$v" | grep -c 'inet ')" = 1 ] || views_ok=0
    echo "$v" | grep -q "inet $SUBNET.$i/24" || views_ok=0
    i=$((i + 1))
done
check "each test host has its own hostname and one address, $SUBNET.<n>" [ $views_ok = 1 ]

printf '%s slots=2\n' "$H1" "$H2" "$H3" >"$TMP/hostfile"
# Open MPI keeps its session directories under here (one per host name).
export OMPI_MCA_orte_tmpdir_base="$TMP"

# mrun SECONDS LOG mpirun-args...: mpirun on host 1, daemons on the others
# through the agent; MPI's own traffic (launch and TCP BTL) stays on the
# test subnet.  The hostfile of all three hosts is given unless the
# arguments bring their own (Open MPI takes one per application context).
mrun() {
    _t=$1 _log=$2 _hf="--hostfile $TMP/hostfile"
    shift 2
    case " $* " in *" --hostfile "*) _hf="" ;; esac
    # shellcheck disable=SC2086
    timeout -k 5 "$_t" sh "$NETNS" exec "$H1" mpirun $_hf \
        --mca plm_rsh_agent "sh $AGENT" --mca plm_rsh_no_tree_spawn 1 \
        --mca routed direct --mca btl tcp,self \
        --mca btl_tcp_if_include "$CIDR" --mca oob_tcp_if_include "$CIDR" \
        "$@" >"$_log" 2>&1
}

mrun 60 "$TMP/hosts.log" -np 1 --host "$H1:1" hostname : -np 2 --host "$H2:1,$H3:1" hostname
# (Under load Open MPI may add a harmless "setpgid failed" warning line.)
if [ "$(grep -E "^psh[1-3]-$TAG\$" "$TMP/hosts.log" | sort | tr '\n' ' ')" = "$H1 $H2 $H3 " ]; then
    ok "mpirun on host 1 starts ranks on all three hosts through the rsh agent"
else
    not_ok "mpirun on host 1 starts ranks on all three hosts through the rsh agent"
    sed 's/^/#   /' "$TMP/hosts.log" | tail -10
fi

# --- the same training job on one host and on three ------------------------

make_csv "$TMP/train.csv" 203 20 4
SRV="--lr 0.1 --momentum 0.9 --nesterov --chunk-kib 4 --timeout 20"
MODEL="--data csv:$TMP/train.csv --model mlp --hidden 48 --epochs 3 --no-shuffle --seed 3"
MODEL="$MODEL --batch-size 16 --timeout 20"

show_log() { sed 's/^/#   /' "$1" | tail -12; }

# 2 servers + 2 workers on this host: the reference.
# shellcheck disable=SC2086
if psrun 120 2 "$SRV --save $TMP/one.st" 2 "$MODEL" "$TMP/one.log"; then
    ok "reference job on one host: 2 servers, 2 workers"
else
    not_ok "reference job on one host: 2 servers, 2 workers"
    show_log "$TMP/one.log"
fi

# multi NAME "extra server flags" [mpirun placement...]: the same job with
# 2 servers on host 1 and one worker on each of hosts 2 and 3 (or the
# placement given), within MULTI_T seconds.
MULTI_T=120 WFLAGS=""
multi() {
    _name=$1 _extra=$2
    shift 2
    if [ $# -eq 0 ]; then
        set -- -np 2 --host "$H1:2" SERVER : -np 2 --host "$H2:1,$H3:1" WORKER
    fi
    _args=""
    for a in "$@"; do
        case "$a" in
        SERVER) a="$ABS_SERVER $SRV $_extra --save $TMP/$_name.st" ;;
        WORKER) a="$ABS_WORKER --progress none $MODEL $WFLAGS" ;;
        esac
        _args="$_args $a"
    done
    # shellcheck disable=SC2086
    mrun "$MULTI_T" "$TMP/$_name.log" $_args
}

# check_multi NAME "what" "extra server flags" [placement...]: the job
# runs and its model is bit for bit the reference's.
check_multi() {
    _n=$1 _what=$2
    shift 2
    multi "$_n" "$@"
    _rc=$?
    if [ $_rc -ne 0 ]; then
        not_ok "$_what: job ran (exit status $_rc)"
        show_log "$TMP/$_n.log"
    elif same_bits "$TMP/one.st" "$TMP/$_n.st"; then
        ok "$_what == one-host job, bit for bit"
    else
        not_ok "$_what == one-host job, bit for bit"
    fi
}

check_multi default "servers on host 1, workers on hosts 2+3, no --iface/--bind" ""
check_multi iface "same with --iface psnet0" "--iface psnet0"
check_multi bind "same with --bind $CIDR" "--bind $CIDR"
# The per-role hostfile form of deploy/hostfile.example, with the servers
# spread over two hosts and both workers on the third.
printf '%s slots=1\n' "$H1" "$H2" >"$TMP/servers.txt"
printf '%s slots=2\n' "$H3" >"$TMP/workers.txt"
check_multi apphf "per-role hostfiles: a server on each of hosts 1+2, both workers on host 3" \
    "" -np 2 --hostfile "$TMP/servers.txt" SERVER : -np 2 --hostfile "$TMP/workers.txt" WORKER

# Mixed placement: the servers and worker 0 share host 1, worker 1 runs on
# host 2.  Worker 0 reaches the servers over shared memory (its headers
# over ipc, peer credentials), worker 1 over tcp (CurveZMQ), in the same
# job and bit for bit the same model.
check_multi mixed "servers + worker 0 on host 1, worker 1 on host 2 (shm and tcp at once)" "" \
    -np 2 --host "$H1:2" SERVER : -np 1 --host "$H1:1" WORKER : -np 1 --host "$H2:1" WORKER
mixed_line="data plane: shm + ipc (peer credentials) to 1 local worker, tcp+CurveZMQ to 1 remote worker"
check "both servers say: $mixed_line" \
    [ "$(grep -c "ps-server\[[01]\]: $mixed_line\$" "$TMP/mixed.log")" = 2 ]
check "each server binds an ipc and a tcp endpoint (subnet address) and names its segment" \
    [ "$(grep -c "ps-server\[[01]\]: data port ipc://[^ ]*/0 ipc://[^ ]*/1 tcp://$SUBNET\.1:[0-9]* tcp://$SUBNET\.1:[0-9]* shm://[^ ]*/ps-shm-[0-9a-f]*\$" \
        "$TMP/mixed.log")" = 2 ]
check "worker 0 mapped both segments (no fall back to ipc)" \
    sh -c "grep -q 'data plane: shm' '$TMP/mixed.log' && ! grep -q 'no shared memory for this worker' '$TMP/mixed.log'"

# --- failures must be prompt and say why ------------------------------------

# expect_fail NAME "what" REGEX LIMIT "server flags" ["worker flags"]: the
# job fails with a message matching REGEX within LIMIT seconds (killed at
# LIMIT + 10).
expect_fail() {
    _n=$1 _what=$2 _re=$3 _lim=$4
    _t0=$(date +%s)
    MULTI_T=$((_lim + 10)) WFLAGS=${6:-}
    multi "$_n" "$5"
    _rc=$? _dt=$(($(date +%s) - _t0))
    MULTI_T=120 WFLAGS=""
    if [ $_rc -eq 0 ] || [ $_rc -eq 124 ] || [ $_rc -eq 137 ] || [ $_dt -gt "$_lim" ]; then
        not_ok "$_what (exit status $_rc after ${_dt} s; wanted an error within $_lim s)"
        show_log "$TMP/$_n.log"
    elif ! grep -Eq -- "$_re" "$TMP/$_n.log"; then
        not_ok "$_what (no message matching /$_re/)"
        show_log "$TMP/$_n.log"
    else
        ok "$_what (${_dt} s)"
    fi
}

# SRV and MODEL above give --timeout 20; 3 here, so that a job that waits
# out its timeouts still ends well within the limit, and a hang shows.
expect_fail nosuch "--iface nosuch0 fails fast, naming the interface" "nosuch0" 20 \
    "--iface nosuch0 --timeout 3"
# A server that advertises an address the workers cannot reach (here
# loopback, on a real cluster a private interface picked by mistake) must
# end the job after --timeout with an error, not hang.  This is also the
# control for the default test above: loopback cannot carry this job.
expect_fail lo "an unreachable advertised address (--iface lo) ends the job after --timeout" \
    "did not|timed out|timeout" 20 "--iface lo --timeout 3" "--timeout 3"

# ipc reaches only this host: asked for with a worker elsewhere, the job
# ends at start-up naming the ranks and their hosts.
expect_fail ipcfar "--transport ipc with workers on other hosts fails at start-up, naming them" \
    "says --transport ipc, but server [01] runs on $H1 and worker [01] on psh[23]-$TAG" 20 \
    "--transport ipc --timeout 3"

# --- what crosses the network, and how fast ---------------------------------

# A bigger model so a step moves about 1 MB per worker each way.
make_csv "$TMP/wide.csv" 256 784 10
D=784 C=10 STEPS=200 W=2
M=$(((D * 256 + 256 + 256 * 128 + 128 + 128 * C + C) * 4)) # model bytes
BIG="--data csv:$TMP/wide.csv --model mlp --hidden 256,128 --batch-size 16 --timeout 20"

# Records the TCP sockets of ps-server/ps-worker on each host every 20 ms
# (until $TMP/stop appears, at most about a minute).
sampler_start() {
    rm -f "$TMP/stop"
    for h in $H1 $H2 $H3; do
        sh "$NETNS" exec "$h" sh -c 'i=0
            while [ ! -e "$1" ] && [ $i -lt 3000 ]; do
                ss -Htanp 2>/dev/null | grep "\"ps-"; sleep 0.02; i=$((i + 1))
            done' sampler "$TMP/stop" >"$TMP/ss.$h" 2>/dev/null &
        SAMPLERS="$SAMPLERS $!"
    done
}
sampler_stop() {
    touch "$TMP/stop"
    for p in $SAMPLERS; do
        wait "$p" 2>/dev/null
    done
    SAMPLERS=""
}

# moved LOG: MB in + out summed over the servers' "done:" lines.
moved() {
    sed -n 's/.*done:.* in \([0-9.]*\) MB, out \([0-9.]*\) MB.*/\1 \2/p' "$1" |
        awk '{ s += $1 + $2 } END { printf "%.1f", s }'
}
elapsed() { sed -n 's/.*"elapsed_s":\([0-9.e+-]*\).*/\1/p' "$1" | tail -1; }
# report NAME LABEL: one "# " line with MB moved, time and throughput.
report() {
    _mb=$(moved "$TMP/$1.log") _s=$(elapsed "$TMP/$1.jsonl")
    awk -v mb="$_mb" -v s="$_s" -v n=$STEPS -v l="$2" 'BEGIN {
        if (s + 0 <= 0) { print "# " l ": no timing"; exit }
        printf "# %s: %d steps, %.0f MB through the servers in %.3f s: %.0f MB/s, %.2f ms/step\n",
            l, n, mb, s, mb / s, 1000 * s / n }'
}

big_job() { # NAME: 2 servers on host 1, a worker on each of hosts 2 and 3
    # shellcheck disable=SC2086
    mrun 120 "$TMP/$1.log" -np 2 --host "$H1:2" "$ABS_SERVER" --timeout 20 \
        : -np 2 --host "$H2:1,$H3:1" "$ABS_WORKER" --progress none $BIG --steps $STEPS \
        --metrics "$TMP/$1.jsonl"
}

# The same on one host (ipc), for comparison.
# shellcheck disable=SC2086
timeout -k 5 120 mpirun --oversubscribe -np 2 "$SERVER" --timeout 20 \
    : -np 2 "$WORKER" --progress none $BIG --steps $STEPS --metrics "$TMP/local.jsonl" \
    >"$TMP/local.log" 2>&1 && report local "one host (ipc)"

sampler_start
big_job big
rc=$?
sampler_stop
if [ $rc -eq 0 ]; then
    ok "a $((M / 1000)) kB model over the test network: 2 servers on host 1, workers on 2 and 3"
    report big "three hosts (tcp over veth)"
else
    not_ok "a $((M / 1000)) kB model over the test network (exit status $rc)"
    show_log "$TMP/big.log"
fi

# The data ports: ps-server's listening sockets on one address (MPI's own
# listen on the wildcard address), one per lane: 2 servers x 2 I/O threads
# (the default).  Every one must be host 1's subnet address, and each
# worker host must have connected to each of them (2 streams per worker
# and server, stream j of worker w through lane (w + j) mod 2).
listen=$(awk '$1 == "LISTEN" && /"ps-server"/ { print $4 }' "$TMP/ss.$H1" |
    grep -v '^0\.0\.0\.0:\|^\[::\]:\|^\*:' | sort -u)
nlisten=$(echo "$listen" | grep -c .)
shown=$(echo "$listen" | tr '\n' ' ' | sed 's/ $//')
if [ "$nlisten" = 4 ] && ! echo "$listen" | grep -qv "^$SUBNET\.1:"; then
    ok "both servers' data ports (2 lanes each) listen on host 1's subnet address: $shown"
else
    not_ok "both servers' data ports (2 lanes each) listen on host 1's subnet address (saw: $shown)"
fi
reached=0
[ "$nlisten" -gt 0 ] && reached=1
for h in $H2 $H3; do
    for ep in $listen; do
        awk -v ep="$ep" '$1 == "ESTAB" && $5 == ep && /"ps-worker"/' "$TMP/ss.$h" |
            grep -q . || reached=0
    done
done
check "the workers on hosts 2 and 3 each connected to every lane of both servers" [ $reached = 1 ]

# docs/operations.md sizes servers by "a step moves 2 x model bytes per
# worker through the servers": check it against the servers' own counts.
mb=$(moved "$TMP/big.log")
want=$(awk -v m=$M -v w=$W -v n=$STEPS 'BEGIN { printf "%.1f", 2 * w * m * n / 1e6 }')
echo "# bytes through the servers: $mb MB; the sizing model says 2 x W x M x steps = $want MB"
check "bytes per step match the sizing model (2 x $W workers x $M B), within 3%" \
    awk -v a="$mb" -v b="$want" 'BEGIN { exit !(a >= b && a <= 1.03 * b) }'

# Optional: an emulated 10 Gbit/s link with 0.2 ms latency on every host.
shape() { # QDISC-ARGS...: on every host's psnet0 ("" removes)
    for h in $H1 $H2 $H3; do
        if [ $# -eq 0 ]; then
            ip netns exec "$h" tc qdisc del dev psnet0 root 2>/dev/null
        else
            ip netns exec "$h" tc qdisc add dev psnet0 root "$@" 2>"$TMP/tc.err" || return 1
        fi
    done
}
if ! command -v tc >/dev/null 2>&1; then
    skip "netem 10gbit/0.2ms run" "no tc"
elif ! shape netem rate 10gbit delay 0.2ms; then
    shape
    skip "netem 10gbit/0.2ms run" "netem unavailable: $(head -1 "$TMP/tc.err")"
else
    if big_job netem; then
        ok "the job runs over a netem link (10gbit, 0.2 ms)"
        report netem "netem 10gbit, 0.2 ms each way"
    else
        not_ok "the job runs over a netem link (10gbit, 0.2 ms)"
        show_log "$TMP/netem.log"
    fi
    shape
fi

# --- teardown ---------------------------------------------------------------

sh "$NETNS" down "$TAG" 3 >/dev/null 2>&1
if left=$(sh "$NETNS" left "$TAG" 3); then
    ok "teardown left nothing behind (ip netns list, ip link)"
else
    not_ok "teardown left nothing behind: $left"
fi
