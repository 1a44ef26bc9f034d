#!/bin/sh
# `make install` into a temporary PREFIX, then what a user does with it,
# from the installed files only: build every program of examples/ and the
# API probes (tests/integration/api_probe.c for the whole-model calls,
# tensor_probe.c for ps_bind and the per-tensor ones) with pkg-config,
# shared and static, run them in place of ps-worker against the installed
# ps-server, check what they learn and save against values derived by hand
# (and the per-tensor path against the whole-model one, bit for bit),
# check the man pages against --help, and `make uninstall`.
. "$(dirname "$0")/lib.sh"

case "$BUILD" in
*san-*)
    skip "make install" "sanitizer build; the install test runs with the plain build"
    exit 0
    ;;
esac
SRC=$(pwd)
P=$TMP/prefix
PY=/usr/bin/python3
export PKG_CONFIG_PATH="$P/lib/pkgconfig"

show() { sed 's/^/#   /' "$1" | tail -"${2:-8}"; }
have_numpy() { [ -x "$PY" ] && "$PY" -c 'import numpy' 2>/dev/null; }
# same_weights A B: two safetensors files hold the same tensors of A, bit for bit.
same_weights() {
    "$PY" -c "import sys; sys.path.insert(0, 'tests/integration'); import sthelp
a = sthelp.read(sys.argv[1])[0]; b = sthelp.read(sys.argv[2])[0]
sys.exit(any(k not in b or a[k].tobytes() != b[k].tobytes() for k in a))" "$1" "$2"
}

if make --no-print-directory -C "$SRC" install PREFIX="$P" BUILD="$BUILD" BINDIR="$BINDIR" \
    >"$TMP/install.log" 2>&1; then
    ok "make install PREFIX=$P"
else
    not_ok "make install PREFIX=$P"
    show "$TMP/install.log"
    exit 0
fi

# --- what was installed ------------------------------------------------------
VER=$("$P/bin/ps-server" --version | sed 's/.* //')
missing=""
for f in include/ps.h lib/libpsclient.a lib/libpsclient.so lib/libpsclient.so.0 \
    "lib/libpsclient.so.$VER" lib/pkgconfig/psclient.pc bin/ps-server bin/ps-worker \
    share/man/man1/ps-server.1 share/man/man1/ps-worker.1; do
    [ -e "$P/$f" ] || missing="$missing $f"
done
check "every file is installed (version $VER)${missing:+, missing:$missing}" [ -z "$missing" ]
check "libpsclient.so -> .so.0 (the soname) -> .so.$VER" sh -c \
    "[ \$(readlink '$P/lib/libpsclient.so') = libpsclient.so.0 ] &&
     [ \$(readlink '$P/lib/libpsclient.so.0') = libpsclient.so.$VER ] &&
     objdump -p '$P/lib/libpsclient.so.$VER' | grep -q 'SONAME *libpsclient.so.0\$'"
check "ps.h is the only header installed" [ "$(ls "$P/include")" = ps.h ]

printf '#include <ps.h>\nint main(void)\n{\n    ps_t *ps = 0;\n    return ps_finalize(&ps);\n}\n' \
    >"$TMP/alone.c"
# shellcheck disable=SC2046
check "ps.h compiles alone (C99, -pedantic)" cc -std=c99 -pedantic -Wall -Wextra -Werror \
    $(pkg-config --cflags psclient) -c "$TMP/alone.c" -o "$TMP/alone.o"
if command -v g++ >/dev/null 2>&1; then
    cp "$TMP/alone.c" "$TMP/alone.cc"
    # shellcheck disable=SC2046
    check "ps.h compiles as C++" g++ -Wall -Wextra -Werror $(pkg-config --cflags psclient) \
        -c "$TMP/alone.cc" -o "$TMP/alone_cc.o"
else
    skip "ps.h compiles as C++" "no g++"
fi
cat >"$TMP/ver.c" <<'EOF'
#include <ps.h>
#include <stdio.h>
int main(void)
{
    printf("%s %d\n", ps_version(), PS_API_VERSION);
    return 0;
}
EOF
# shellcheck disable=SC2046
cc -o "$TMP/ver" "$TMP/ver.c" $(pkg-config --cflags --libs psclient) >"$TMP/ver.log" 2>&1
check "ps_version() of the installed library is the programs' $VER; PS_API_VERSION 6" \
    [ "$("$TMP/ver" 2>&1)" = "$VER 6" ]
check "the man pages say ps $VER" sh -c \
    "grep -q '\"ps $VER\"' '$P/share/man/man1/ps-server.1' &&
     grep -q '\"ps $VER\"' '$P/share/man/man1/ps-worker.1'"
nfun=$(sed -n 's/^[a-z].*[ *]\(ps_[a-z_]*\)(.*/\1/p' "$P/include/ps.h" | sort)
nexp=$(nm -D --defined-only "$P/lib/libpsclient.so" | awk '$2 == "T" {print $3}' | sort)
check "the shared library exports exactly ps.h's $(echo "$nfun" | wc -l) functions" \
    [ "$nfun" = "$nexp" ]

# --- the examples, built with pkg-config only ---------------------------------
cp -r "$SRC/examples" "$TMP/ex"
cd "$TMP/ex" || exit 1
for src in *.c; do
    prog=${src%.c}
    # shellcheck disable=SC2046
    if cc -O2 -Wall -Wextra -Werror -o "$prog" "$src" \
        $(pkg-config --cflags --libs psclient) -lm >"$TMP/cc.log" 2>&1 &&
        ldd "./$prog" | grep -q "libpsclient.so.0 => $P/lib/"; then
        ok "cc $src \$(pkg-config --cflags --libs psclient): the installed ps.h, uses $P/lib"
    else
        not_ok "examples/$src builds against the installed header and shared library"
        show "$TMP/cc.log"
    fi
done
static_ok=1
make static >"$TMP/static.log" 2>&1 || static_ok=0
for src in *.c; do
    prog=${src%.c}-static
    [ -x "$prog" ] && ! ldd "./$prog" | grep -q libpsclient || static_ok=0
done
if [ $static_ok -eq 1 ]; then
    ok "examples/Makefile: make static links libpsclient.a into every example"
else
    not_ok "examples/Makefile: make static links libpsclient.a into every example"
    show "$TMP/static.log"
fi
cd "$SRC" || exit 1

# job TIMEOUT LOG MPIRUN-ARGS...: one job; mpirun's exit status.
job() {
    _t=$1 _log=$2
    shift 2
    timeout -k 5 "$_t" mpirun --oversubscribe "$@" >"$_log" 2>&1
}

# loss/accuracy of an epoch line "epoch E loss L accuracy A" in a log
field() { awk -v e="$2" -v f="$3" '$1 == "epoch" && $2 == e {print $f}' "$1"; }

LN2=0.6931
job 120 "$TMP/lr1.log" -np 1 "$P/bin/ps-server" --quiet --lr 0.5 --save "$TMP/server1.st" \
    : -np 2 "$TMP/ex/logreg_worker" "$TMP/worker1.st"
rc=$?
check "the installed ps-server with 2 logreg_workers (exit $rc)" [ $rc -eq 0 ]
[ $rc -eq 0 ] || show "$TMP/lr1.log"
# Zero weights predict 1/2 for every sample: the loss is ln 2 exactly.
check "epoch 0 loss is ln 2 (zero initial weights)" [ "$(field "$TMP/lr1.log" 0 4)" = $LN2 ]
L5=$(field "$TMP/lr1.log" 5 4)
A5=$(field "$TMP/lr1.log" 5 6)
# A misclassified sample costs at least ln 2, so error <= loss / ln 2: a loss
# under ln2/5 guarantees 80%; the data are separable, so we ask for 90%.
check "loss after 5 epochs $L5 < ln2/5, accuracy $A5 >= max(1 - loss/ln2, 0.9)" \
    awk -v l="${L5:-9}" -v a="${A5:-0}" 'BEGIN {
        exit !(l < 0.6931472 / 5 && a >= 1 - l / 0.6931472 && a >= 0.9) }'

if have_numpy; then
    "$PY" - "$TMP/server1.st" "$TMP/worker1.st" >"$TMP/st.log" 2>&1 <<'EOF'
import sys
sys.path.insert(0, "tests/integration")
import numpy as np
import sthelp
srv, _ = sthelp.read(sys.argv[1])
wkr, meta = sthelp.read(sys.argv[2])
assert srv["fc.weight"].shape == (1, 4) and srv["fc.bias"].shape == (1,), "names/shapes"
print("names", sorted(srv))
w = srv["fc.weight"][0].astype(float)
# The labels are [x0 + x1 - x2 > 0]: the weights point along (1, 1, -1, 0).
cos = w @ np.array([1, 1, -1, 0]) / np.sqrt(3) / np.linalg.norm(w)
print("cos", cos)
assert cos > 0.95, cos
assert set(wkr) == {"fc.weight", "fc.bias"} and meta["step"] == "200", (sorted(wkr), meta)
for k in wkr:
    assert wkr[k].tobytes() == srv[k].tobytes(), k
print("ok")
EOF
    if [ "$(tail -1 "$TMP/st.log")" = ok ]; then
        ok "--save has fc.weight [1,4] and fc.bias [1], along (1,1,-1,0); worker 0's ps_save = the servers' weights, bit for bit"
    else
        not_ok "the saved models"
        show "$TMP/st.log"
    fi
else
    skip "the saved models" "no numpy in $PY"
fi

# Sync mode sums in rank order: 2 servers give the bits of 1.
job 120 "$TMP/lr2.log" -np 2 "$P/bin/ps-server" --quiet --lr 0.5 --save "$TMP/server2.st" \
    : -np 2 "$TMP/ex/logreg_worker-static"
rc=$?
grep '^epoch' "$TMP/lr1.log" >"$TMP/e1"
grep '^epoch' "$TMP/lr2.log" >"$TMP/e2"
check "statically linked workers, 2 servers: the same epochs (exit $rc)" sh -c \
    "[ $rc -eq 0 ] && [ -s '$TMP/e1' ] && cmp -s '$TMP/e1' '$TMP/e2'"
if have_numpy; then
    check "2 servers save the model bits of 1" same_weights "$TMP/server1.st" "$TMP/server2.st"
else
    skip "2 servers save the model bits of 1" "no numpy in $PY"
fi

# mlp_worker: its own arrays bound, each layer pushed as backward has it and
# pulled just before forward needs it; --whole trains through ps_step.  The
# two paths must give the same bits (and 2 servers those of 1).  The labels
# are [x0 * x1 > 0]: no linear model reaches 0.75, the MLP must reach 0.95.
job 120 "$TMP/mlp1.log" -np 1 "$P/bin/ps-server" --quiet --lr 0.2 --momentum 0.9 \
    : -np 2 "$TMP/ex/mlp_worker" "$TMP/mlp1.st"
rc=$?
check "mlp_worker (per-tensor pushes and pulls) with the installed ps-server (exit $rc)" \
    [ $rc -eq 0 ]
[ $rc -eq 0 ] || show "$TMP/mlp1.log"
AM=$(awk '$1 == "epoch" {a = $6} END {print a}' "$TMP/mlp1.log")
check "mlp_worker learns the XOR quadrants: final accuracy ${AM:-none} >= 0.95" \
    awk -v a="${AM:-0}" 'BEGIN { exit !(a >= 0.95) }'
job 120 "$TMP/mlp2.log" -np 2 "$P/bin/ps-server" --quiet --lr 0.2 --momentum 0.9 \
    : -np 2 "$TMP/ex/mlp_worker-static" "$TMP/mlp2.st" --whole
rc=$?
check "mlp_worker --whole (ps_step), 2 servers: the same model bits as per-tensor, 1 server" \
    sh -c "[ $rc -eq 0 ] && [ -s '$TMP/mlp1.st' ] && cmp -s '$TMP/mlp1.st' '$TMP/mlp2.st'"

# A drop-in for ps-worker: the same start-up protocol, so the two can even
# meet in one job, where they disagree on the model, by name, in one line.
make_csv "$TMP/mix.csv" 40 4 2
job 60 "$TMP/mix.log" -np 1 "$P/bin/ps-server" --quiet : -np 1 "$TMP/ex/logreg_worker" \
    : -np 1 "$P/bin/ps-worker" --progress none --model linear --data "csv:$TMP/mix.csv"
rc=$?
check "logreg_worker next to ps-worker: 'workers disagree' once, exit $rc" sh -c \
    "[ $rc -ne 0 ] && [ $rc -ne 124 ] &&
     [ \$(grep -c 'workers disagree on the model' '$TMP/mix.log') -eq 1 ]"
[ $rc -ne 0 ] && [ $rc -ne 124 ] || show "$TMP/mix.log"
job 60 "$TMP/noserver.log" -np 2 "$TMP/ex/logreg_worker"
rc=$?
check "no ps-server ranks: a prompt error (exit $rc)" sh -c \
    "[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'no ps-server ranks' '$TMP/noserver.log'"

# --- every call of the API ----------------------------------------------------
# shellcheck disable=SC2046
if cc -O2 -Wall -Wextra -Werror -o "$TMP/api_probe" tests/integration/api_probe.c \
    $(pkg-config --cflags --libs psclient) -lm >"$TMP/probe_cc.log" 2>&1; then
    ok "api_probe builds with pkg-config"
else
    not_ok "api_probe builds with pkg-config"
    show "$TMP/probe_cc.log"
fi

# probe_tap LOG [SUMMARY]: the probe's checks as TAP lines, one per check
# over all ranks, or with SUMMARY just one line for all of them.
probe_tap() {
    awk -v summary="${2:-}" '
        /^probe\[-?[0-9]+\]: (not )?ok - / {
            bad = $0 ~ /^probe\[-?[0-9]+\]: not ok/
            d = $0
            sub(/^probe\[-?[0-9]+\]: (not )?ok - /, "", d)
            if (!(d in seen)) { seen[d] = 1; order[n++] = d }
            fail[d] += bad; nfail += bad; total++
        }
        END {
            if (summary != "") {
                print (nfail || !total ? "not ok" : "ok") "\t" summary ": " total " checks, " \
                    nfail " failed"
            }
            for (i = 0; i < n; i++) {
                if (summary == "" || fail[order[i]]) {
                    print (fail[order[i]] ? "not ok" : "ok") "\tapi_probe: " order[i]
                }
            }
        }' "$1" >"$TMP/tap.txt"
    while IFS="$(printf '\t')" read -r verdict what; do
        if [ "$verdict" = ok ]; then ok "$what"; else not_ok "$what"; fi
    done <"$TMP/tap.txt"
}

job 120 "$TMP/probe.log" -np 1 "$P/bin/ps-server" --quiet --lr 0.125 --momentum 0 \
    --save "$TMP/probe_server.st" : -np 2 "$TMP/api_probe" main 1 0.125 "$TMP/probe_worker.st"
rc=$?
probe_tap "$TMP/probe.log"
check "api_probe main: the job ends well (exit $rc)" [ $rc -eq 0 ]
[ $rc -eq 0 ] || show "$TMP/probe.log"
if have_numpy; then
    check "api_probe: ps_save holds the servers' weights, bit for bit" "$PY" -c "
import sys; sys.path.insert(0, 'tests/integration'); import sthelp
s = sthelp.read('$TMP/probe_server.st')[0]; w, m = sthelp.read('$TMP/probe_worker.st')
assert list(w) == ['l1.weight', 'l1.bias', 'u', 'v', 'z'] and m['step'] == '3', (list(w), m)
assert all(w[k].tobytes() == s[k].tobytes() for k in w)"
else
    skip "api_probe: ps_save holds the servers' weights" "no numpy in $PY"
fi

# probe_fail MODE "message": worker 1 misbehaves; the job must end promptly,
# non-zero, with the message once.
probe_fail() {
    job 60 "$TMP/probe_$1.log" -np 1 "$P/bin/ps-server" --quiet : -np 2 "$TMP/api_probe" "$1"
    rc=$?
    probe_tap "$TMP/probe_$1.log" "api_probe $1: the probe's checks on both workers"
    n=$(grep -c -- "$2" "$TMP/probe_$1.log")
    if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$n" -eq 1 ]; then
        ok "api_probe $1: the job ends (exit $rc) saying '$2' once"
    else
        not_ok "api_probe $1: exit $rc, '$2' said $n times"
        show "$TMP/probe_$1.log"
    fi
}
probe_fail bad-declare "tensor 'bad': 0 dimensions"
probe_fail fail "probe: my data file is gone"
probe_fail mismatch "workers disagree on the model or plan: worker 1 declared"
probe_fail early "worker 1 left before ps_start"
probe_fail nan "non-finite gradient on worker 1 in l1.weight at step 1"

# --- the per-tensor calls ------------------------------------------------------
# shellcheck disable=SC2046
if cc -O2 -Wall -Wextra -Werror -o "$TMP/tensor_probe" tests/integration/tensor_probe.c \
    $(pkg-config --cflags --libs psclient) -lm >"$TMP/tprobe_cc.log" 2>&1; then
    ok "tensor_probe builds with pkg-config"
else
    not_ok "tensor_probe builds with pkg-config"
    show "$TMP/tprobe_cc.log"
fi
job 120 "$TMP/tprobe.log" -np 1 "$P/bin/ps-server" --quiet --lr 0.125 --momentum 0 \
    --chunk-kib 4 --save "$TMP/tprobe_server.st" \
    : -np 2 "$TMP/tensor_probe" main 0.125 "$TMP/tprobe_worker.st"
rc=$?
probe_tap "$TMP/tprobe.log"
check "tensor_probe main: the job ends well (exit $rc)" [ $rc -eq 0 ]
[ $rc -eq 0 ] || show "$TMP/tprobe.log"
if have_numpy; then
    # t starts at 0 and takes g = 5/3, 5/3, 3, 5/3: 0 - 0.125 * 8 = -1.
    check "tensor_probe: ps_save of the bound arrays holds the servers' weights, bit for bit" \
        "$PY" -c "
import sys; sys.path.insert(0, 'tests/integration'); import sthelp
s = sthelp.read('$TMP/tprobe_server.st')[0]; w, m = sthelp.read('$TMP/tprobe_worker.st')
assert list(w) == ['s.weight', 's.bias', 'big', 't'] and m['step'] == '4', (list(w), m)
assert all(w[k].tobytes() == s[k].tobytes() for k in w)
assert (s['t'] == -1).all(), s['t']"
else
    skip "tensor_probe: ps_save of the bound arrays" "no numpy in $PY"
fi
job 60 "$TMP/probe_bad-bind.log" -np 1 "$P/bin/ps-server" --quiet \
    : -np 2 "$TMP/tensor_probe" bad-bind
rc=$?
probe_tap "$TMP/probe_bad-bind.log" "tensor_probe bad-bind: the probe's checks on both workers"
n=$(grep -c "ps_bind: the arrays of 's.bias' overlap those bound to 's.weight'" \
    "$TMP/probe_bad-bind.log")
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$n" -eq 1 ]; then
    ok "tensor_probe bad-bind: overlapping arrays end the start-up (exit $rc), said once"
else
    not_ok "tensor_probe bad-bind: exit $rc, said $n times"
    show "$TMP/probe_bad-bind.log"
fi

# A program that initialises MPI itself keeps it after ps_finalize (needs
# the shared-MPI support in ps_boot; without it ps_init refuses cleanly).
cat >"$TMP/own_mpi.c" <<'EOF'
#include <mpi.h>
#include <ps.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    ps_t *ps;
    float *g;
    int done = 1;
    MPI_Init(&argc, &argv);
    if (ps_init(&ps, &argc, &argv, NULL) != 0) {
        printf("own_mpi: refused: %s\n", ps_last_error());
        fflush(stdout);
        MPI_Abort(MPI_COMM_WORLD, 0); /* the servers are waiting for us */
    }
    ps_declare(ps, "w", 1, (int64_t[]){4}, NULL);
    ps_plan(ps, 2, 2);
    if (ps_start(ps) != 0 || ps_tensor(ps, "w", NULL, &g, NULL) != 0) {
        return ps_finalize(&ps), 1;
    }
    for (int s = 0; s < 2; s++) {
        g[0] = 1.0f;
        ps_step(ps, 1);
    }
    int rv = ps_finalize(&ps);
    MPI_Finalized(&done);
    printf("own_mpi: finalize %d, MPI still ours %d\n", rv, !done);
    return MPI_Finalize() == MPI_SUCCESS && rv == 0 && !done ? 0 : 1;
}
EOF
# shellcheck disable=SC2046
if cc -o "$TMP/own_mpi" "$TMP/own_mpi.c" $(pkg-config --cflags --libs psclient ompi-c) \
    >"$TMP/own_cc.log" 2>&1; then
    job 60 "$TMP/own.log" -np 1 "$P/bin/ps-server" --quiet : -np 2 "$TMP/own_mpi"
    rc=$?
    check "a program that initialised MPI keeps it (exit $rc)" sh -c "[ $rc -eq 0 ] &&
        [ \$(grep -c 'finalize 0, MPI still ours 1' '$TMP/own.log') -eq 2 ]"
else
    not_ok "a program that initialises MPI builds"
    show "$TMP/own_cc.log"
fi

# --- man pages ---------------------------------------------------------------
# man_covers BINARY PAGE: every --help flag has an entry with its default.
man_covers() {
    sed 's/\\-/-/g' "$2" >"$TMP/man.src"
    bad=""
    for name in $("$1" --help | sed -n 's/^  --\([a-z-]*\).*/\1/p'); do
        def=$("$1" --help | sed -n "s/^  --$name .*(default: \(.*\))\$/\1/p")
        awk -v flag="--$name" -v def="$def" '
            /^\.(TP|SH|SS)/ { if (entry) exit; tp = /^\.TP/; next }
            tp { tp = 0; if ($1 ~ /^\.B[IR]?$/ && $2 == flag) { entry = 1; found = def == "" } }
            entry && def != "" && index($0, "Default: " def ".") { found = 1 }
            END { exit !found }' "$TMP/man.src" || bad="$bad --$name"
    done
    [ -z "$bad" ] || echo "# missing or without their default:$bad"
    [ -z "$bad" ]
}
for b in ps-server ps-worker; do
    page=$P/share/man/man1/$b.1
    check "man -l $b.1 renders without warnings" sh -c \
        "MANWIDTH=80 man --warnings -l '$page' 2>'$TMP/man.err' | grep -q '^NAME' &&
         [ ! -s '$TMP/man.err' ]"
    check "$b.1 has every flag of $b --help with its default" man_covers "$P/bin/$b" "$page"
done

# --- uninstall ---------------------------------------------------------------
make --no-print-directory -C "$SRC" uninstall PREFIX="$P" BUILD="$BUILD" BINDIR="$BINDIR" \
    >"$TMP/uninstall.log" 2>&1
left=$(find "$P" ! -type d | sed "s|^$P/||" | tr '\n' ' ')
check "make uninstall removes every installed file${left:+ (left: $left)}" [ -z "$left" ]
