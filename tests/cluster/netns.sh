#!/bin/sh
# Test "hosts" made of Linux network namespaces, for multi-host jobs on one
# machine (tests/integration/test_cluster.sh).  Root only.
#
#   sh tests/cluster/netns.sh up   TAG N SUBNET   make N hosts
#   sh tests/cluster/netns.sh down TAG N          remove them (safe twice)
#   sh tests/cluster/netns.sh left TAG N          list what is left; exit 1 if any
#   sh tests/cluster/netns.sh exec HOST cmd...    run cmd on a host
#
# `up` makes, for i = 1..N:
#   a namespace        psh<i>-TAG   (also the host's name: see `exec`)
#   a veth pair        psv<i>-TAG in the root namespace, enslaved to the
#                      bridge, and psnet0 inside the namespace
#   the address        SUBNET.<i>/24 on psnet0 (SUBNET is three octets,
#                      e.g. 10.231.57: a private /24 that exists only on
#                      this bridge)
# and one bridge psbr-TAG in the root namespace, with no address: the root
# namespace takes no part in the traffic, and nothing is routed anywhere
# else.  TAG keeps concurrent runs apart (the caller's PID).  Interface
# names must fit in 15 bytes, so TAG is at most 10 characters.
#
# `exec HOST cmd...` runs cmd in namespace HOST with its own UTS namespace
# whose hostname is HOST, so gethostname() differs per test host (Open MPI
# and ps-server decide "same host" by host name).
set -eu

usage() {
    sed -n '2,9p' "$0" >&2
    exit 2
}

ns_name() { echo "psh$1-$2"; }
veth_name() { echo "psv$1-$2"; }
bridge_name() { echo "psbr-$1"; }

up() {
    tag=$1 n=$2 subnet=$3
    br=$(bridge_name "$tag")
    ip link add "$br" type bridge
    ip link set "$br" up
    i=1
    while [ "$i" -le "$n" ]; do
        ns=$(ns_name "$i" "$tag") v=$(veth_name "$i" "$tag")
        ip netns add "$ns"
        # Both ends are created here, then the peer moves in and is renamed,
        # so every host sees the same interface name (psnet0).
        ip link add "$v" type veth peer name "psp$i-$tag"
        ip link set "psp$i-$tag" netns "$ns"
        ip link set "$v" master "$br"
        ip link set "$v" up
        ip netns exec "$ns" ip link set lo up
        ip netns exec "$ns" ip link set "psp$i-$tag" name psnet0
        ip netns exec "$ns" ip addr add "$subnet.$i/24" dev psnet0
        ip netns exec "$ns" ip link set psnet0 up
        i=$((i + 1))
    done
}

# Ends the processes still running inside our namespaces (by PID, as listed
# by `ip netns pids`), then deletes the namespaces, veths and the bridge.
down() {
    tag=$1 n=$2
    i=1
    while [ "$i" -le "$n" ]; do
        ns=$(ns_name "$i" "$tag")
        if ip netns list | grep -q "^$ns\( \|$\)"; then
            for p in $(ip netns pids "$ns" 2>/dev/null); do
                kill -9 "$p" 2>/dev/null || :
            done
            ip netns del "$ns" 2>/dev/null || :
        fi
        # Deleting the namespace deletes its veth end and so the pair; this
        # catches a pair left by an interrupted `up`.
        ip link del "$(veth_name "$i" "$tag")" 2>/dev/null || :
        ip link del "psp$i-$tag" 2>/dev/null || :
        i=$((i + 1))
    done
    ip link del "$(bridge_name "$tag")" 2>/dev/null || :
}

left() {
    tag=$1
    found=$({
        ip netns list | grep -- "-$tag\( \|$\)" || :
        ip -o link show | grep -- "-${tag}[@:]" || :
    })
    [ -z "$found" ] && return 0
    echo "$found"
    return 1
}

host_exec() {
    host=$1
    shift
    # unshare --uts gives this host its own hostname without touching the
    # machine's; the command keeps its PID through the execs.
    # shellcheck disable=SC2016
    exec ip netns exec "$host" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$host" "$@"
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
up) [ $# -eq 3 ] || usage; up "$@" ;;
down) [ $# -eq 2 ] || usage; down "$@" ;;
left) [ $# -eq 2 ] || usage; left "$@" ;;
exec) [ $# -ge 2 ] || usage; host_exec "$@" ;;
*) usage ;;
esac
