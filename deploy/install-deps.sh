#!/bin/sh
# Install the Debian/Ubuntu packages this project builds, tests and runs with.
#
#   sh deploy/install-deps.sh               install (apt-get update first)
#   sh deploy/install-deps.sh --if-missing  install only when a package is absent
#
# Runs apt-get directly as root, through sudo otherwise.
#
# This is the one install step: CI (.ci/run) and the container build
# (deploy/container/Dockerfile, checked by tests/integration/test_deploy.sh)
# both call it, as `make deps` does: a package added here reaches all three.
#
# RHEL/Rocky/Alma equivalents (EPEL enabled): openmpi openmpi-devel
# zeromq-devel openblas-devel zlib-devel pkgconf-pkg-config libcmocka-devel
# inih-devel jansson-devel gnuplot (python3-zmq for the tests); Fashion-MNIST is not packaged there: fetch the four
# IDX .gz files yourself and pass --data-dir.
set -eu

# Build and run.
PKGS="openmpi-bin libopenmpi-dev libzmq3-dev libopenblas-dev zlib1g-dev pkg-config
dataset-fashion-mnist make gcc libinih-dev libjansson-dev gnuplot-nox"
# Tests: the unit-test framework, the PyTorch reference, network namespaces
# (iproute2: `ip netns` and `ss` for tests/integration/test_cluster.sh).
PKGS="$PKGS libcmocka-dev python3-torch python3-numpy python3-zmq iproute2 procps clang libclang-rt-dev"
# CI's style gate (make format-check): Debian 12's clang-format is 14.
PKGS="$PKGS clang-format"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done

if [ "${1:-}" = "--if-missing" ] && [ -z "$missing" ]; then
    exit 0
fi
[ -n "$missing" ] || missing="$PKGS"

if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-deps: not root and no sudo; install these packages:$missing" >&2
    exit 1
fi

echo "install-deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
