# Shared helpers for the integration tests (sourced, POSIX sh).
# Each test prints TAP lines: "ok N - what" / "not ok N - what" /
# "ok N - what # SKIP why"; tests/run.sh counts them.

BUILD=${BUILD:-build}
BINDIR=${BINDIR:-bin}
SERVER=${BINDIR}/ps-server
WORKER=${BINDIR}/ps-worker
TOOLS=${BUILD}/tools
# Open MPI refuses root and more ranks than cores unless told; the test
# harness says so here, not in people's shells.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
# Quiet, loopback-only MPI wiring for single-host tests.
export OMPI_MCA_btl_base_warn_component_unused=0
export OMPI_MCA_btl=self,vader,tcp
export OMPI_MCA_btl_vader_single_copy_mechanism=none

TAP_N=0
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ps-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
# Servers put their ipc socket files in $TMPDIR: keep those of the jobs a
# test kills on purpose inside $TMP too.
export TMPDIR="$TMP"

ok() { TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - $*"; }
not_ok() { TAP_N=$((TAP_N + 1)); echo "not ok $TAP_N - $*"; }
skip() { TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - $1 # SKIP $2"; }
# check "description" command...: ok when the command succeeds.
check() {
    d=$1
    shift
    if "$@"; then ok "$d"; else not_ok "$d"; fi
}

# psrun TIMEOUT S "server flags" W "worker flags" [LOG]: one mpirun job.
# Exit status is mpirun's (124 on timeout); output goes to LOG.
psrun() {
    _t=$1 _s=$2 _sf=$3 _w=$4 _wf=$5 _log=${6:-$TMP/last.log}
    # shellcheck disable=SC2086
    timeout -k 5 "$_t" mpirun --oversubscribe -np "$_s" "$SERVER" --quiet $_sf \
        : -np "$_w" "$WORKER" --progress none $_wf >"$_log" 2>&1
}

# A deterministic classification data set in CSV: N rows, D features,
# C classes, made by awk from a fixed LCG (no external tools needed).
make_csv() {
    awk -v n="$2" -v d="$3" -v c="$4" -v seed="${5:-7}" 'BEGIN {
        s = seed
        for (i = 0; i < n; i++) {
            s = (s * 1103515245 + 12345) % 2147483648; lab = s % c
            line = lab
            for (j = 0; j < d; j++) {
                s = (s * 1103515245 + 12345) % 2147483648
                v = (s / 2147483648.0) - 0.5 + ((j % c) == lab ? 0.8 : 0)
                line = line sprintf(",%.5f", v)
            }
            print line
        }
    }' >"$1"
}

# close_to A B RTOL ATOL: two safetensors files hold the same tensors with
# values within tolerance (st_compare, an independent reader).
close_to() { "$TOOLS/st_compare" "$1" "$2" --rtol "$3" --atol "$4"; }
same_bits() { cmp -s "$1" "$2"; }
