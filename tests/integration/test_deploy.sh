#!/bin/sh
# Checks the deployment files as far as one machine can, one TAP line each:
#   shell scripts      sh -n / bash -n, and shellcheck when it is installed
#   hostfile.example   every host line parses; every "mpirun --hostfile hosts"
#                      line in its comments puts the servers on nodes of
#                      their own (Open MPI's own mapper, --do-not-launch)
#   ps-train.sbatch    #SBATCH lines are well formed and come first; dry
#                      runs (a stand-in scontrol) of both launchers place
#                      the ranks as documented; real runs with stand-in
#                      mpirun and srun that fail once after a checkpoint
#                      are rerun by deploy/ps-launch with --resume after
#                      the ps-server word (in the multi-prog file for srun)
#   ps-launch          --help documents its options
#   mpijob.yaml        parses (PyYAML), is a v2beta1 MPIJob whose launcher
#                      line maps the servers alone onto the first Worker pod
#   Dockerfile         Debian 12, installs with deploy/install-deps.sh as
#                      CI does, builds with make, copies existing paths,
#                      and its run-time packages provide every library the
#                      binaries link
. "$(dirname "$0")/lib.sh"

D=deploy
HOSTFILE=$D/hostfile.example
SBATCH=$D/slurm/ps-train.sbatch
MPIJOB=$D/k8s/mpijob.yaml
DOCKERFILE=$D/container/Dockerfile
PY=/usr/bin/python3
have() { command -v "$1" >/dev/null 2>&1; }
# Keep the output of a failed check visible in the log.
show() { sed 's/^/#   /' "$1" | tail -"${2:-10}"; }

# --- shell scripts ------------------------------------------------------------

scripts="$D/install-deps.sh $SBATCH $D/ps-launch tests/cluster/netns.sh tests/cluster/rsh-agent.sh
tests/integration/test_cluster.sh tests/integration/test_deploy.sh"
for f in $D/*.sh; do
    case " $scripts " in *" $f "*) ;; *) scripts="$scripts $f" ;; esac
done
for f in $scripts; do
    if [ ! -f "$f" ]; then
        not_ok "$f exists"
        continue
    fi
    case "$(head -1 "$f")" in
    *bash*) shell="bash" ;;
    *) shell="sh" ;;
    esac
    if ! have "$shell"; then
        skip "$shell -n $f" "no $shell"
    elif "$shell" -n "$f" 2>"$TMP/syntax.err"; then
        ok "$shell -n $f"
    else
        not_ok "$shell -n $f"
        show "$TMP/syntax.err"
    fi
done
if have shellcheck; then
    for f in $scripts; do
        [ -f "$f" ] || continue
        # Warnings and errors; style notes do not fail the build.
        if shellcheck -S warning "$f" >"$TMP/sc.out" 2>&1; then
            ok "shellcheck $f"
        else
            not_ok "shellcheck $f"
            show "$TMP/sc.out" 20
        fi
    done
else
    skip "shellcheck on the scripts" "shellcheck is not installed"
fi

# --- placement, checked with Open MPI's own mapper ----------------------------

# map_check NS NW "mpirun ...": the command, run with --do-not-launch
# --display-map and its two binaries replaced by `true`, maps NS ps-server
# ranks (app 0) and NW ps-worker ranks (app 1), and no node gets both.
# Output in $TMP/map.out.
map_check() {
    _cmd=$(printf '%s\n' "$3" | sed -e 's#^mpirun #mpirun --do-not-launch --display-map #' \
        -e 's#[^ ]*ps-server #true #' -e 's#[^ ]*ps-worker #true #')
    # </dev/null: mpirun forwards stdin, which would eat a caller's loop input.
    timeout 30 bash -c "$_cmd" </dev/null >"$TMP/map.out" 2>&1
    awk -v ns="$1" -v nw="$2" '
        /Data for node:/ { node = $4 }
        / App: 0 / { s[node]++; ts++ }
        / App: 1 / { w[node]++; tw++ }
        END {
            bad = (ts != ns || tw != nw)
            for (n in s) if (n in w) bad = 1
            exit bad
        }' "$TMP/map.out"
}
can_map=1
if ! have mpirun || ! have bash; then
    can_map=0
fi

# --- hostfile.example ---------------------------------------------------------

if [ ! -f "$HOSTFILE" ]; then
    not_ok "$HOSTFILE exists"
else
    bad=$(grep -v '^[[:space:]]*\(#\|$\)' "$HOSTFILE" |
        grep -Ev '^[A-Za-z0-9][A-Za-z0-9._-]*( +(slots|max_slots)=[1-9][0-9]*)*[[:space:]]*$')
    nhosts=$(grep -cv '^[[:space:]]*\(#\|$\)' "$HOSTFILE")
    if [ -z "$bad" ] && [ "$nhosts" -ge 2 ]; then
        ok "$HOSTFILE: $nhosts host lines, each NAME [slots=N] [max_slots=N]"
    else
        not_ok "$HOSTFILE: host lines parse (bad: $bad)"
    fi
    grep '^#   mpirun --hostfile hosts ' "$HOSTFILE" | sed 's/^#   //' >"$TMP/hf.lines"
    n=0
    while IFS= read -r line; do
        n=$((n + 1))
        # -np of the context before " : " (servers) and after it (workers).
        ns=$(echo "$line" | sed 's/ : .*//' | sed -n 's/.*-np \([0-9]*\) .*/\1/p')
        nw=$(echo "$line" | sed 's/.* : //' | sed -n 's/.*-np \([0-9]*\) .*/\1/p')
        cmd=$(echo "$line" | sed "s#--hostfile hosts #--hostfile $HOSTFILE #")
        if [ $can_map = 0 ]; then
            skip "$HOSTFILE example $n places the servers apart" "no mpirun or bash"
        elif [ -n "$ns" ] && [ -n "$nw" ] && map_check "$ns" "$nw" "$cmd"; then
            ok "$HOSTFILE example $n: $ns servers on nodes of their own, $nw workers"
        else
            not_ok "$HOSTFILE example $n places the servers apart: $line"
            show "$TMP/map.out" 20
        fi
    done <"$TMP/hf.lines"
    [ $n -gt 0 ] || not_ok "$HOSTFILE documents an 'mpirun --hostfile hosts' line"
fi

# --- the Slurm batch script ----------------------------------------------------

# sbatch reads #SBATCH lines only before the first command; each must be
# "#SBATCH --name[=value]" with a known name (sbatch refuses a job with an
# unknown option, which one would otherwise learn only on the cluster).
KNOWN=" job-name nodes ntasks ntasks-per-node cpus-per-task exclusive time output error
partition account qos mem mem-per-cpu constraint gres "
awk '
    /^#SBATCH/ { if (cmd) { print "after a command: " $0 } ; next }
    /^[[:space:]]*(#|$)/ { next }
    { cmd = 1 }' "$SBATCH" >"$TMP/sb.late"
sed -n 's/^#SBATCH[[:space:]]*//p' "$SBATCH" >"$TMP/sb.directives"
bad=""
nsb=0
while IFS= read -r d; do
    nsb=$((nsb + 1))
    name=$(echo "$d" | sed -n 's/^--\([a-z][a-z-]*\)\(=[^[:space:]]\{1,\}\)\{0,1\}$/\1/p')
    case "$KNOWN" in *" $name "*) ;; *) bad="$bad [$d]" ;; esac
    case "$d" in
    --time=*)
        echo "$d" | grep -Eq '^--time=([0-9]+-)?[0-9]{1,2}:[0-9]{2}:[0-9]{2}$' || bad="$bad [$d]"
        ;;
    --nodes=* | --ntasks-per-node=* | --cpus-per-task=*)
        echo "$d" | grep -Eq '=[1-9][0-9]*$' || bad="$bad [$d]"
        ;;
    esac
done <"$TMP/sb.directives"
if [ $nsb -gt 0 ] && [ -z "$bad" ] && [ ! -s "$TMP/sb.late" ]; then
    ok "$SBATCH: $nsb #SBATCH lines, well formed, before the first command"
else
    not_ok "$SBATCH: #SBATCH lines well formed ($nsb;$bad $(cat "$TMP/sb.late"))"
fi

# Dry runs on a pretend allocation of node01..node03, 4 tasks per node.
mkdir -p "$TMP/fakebin"
cat >"$TMP/fakebin/scontrol" <<'EOF'
#!/bin/sh
[ "$1 $2" = "show hostnames" ] || exit 1
printf 'node01\nnode02\nnode03\n'
EOF
chmod +x "$TMP/fakebin/scontrol"
printf 'node01 slots=4\nnode02 slots=4\nnode03 slots=4\n' >"$TMP/alloc"
sbatch_dry() { # LAUNCHER: output in $TMP/sb.out, files in $TMP/sbrun
    PATH="$TMP/fakebin:$PATH" SLURM_JOB_NODELIST='node[01-03]' SLURM_NTASKS_PER_NODE=4 \
        SLURM_JOB_ID=1 LAUNCHER=$1 DRY_RUN=1 RUN_DIR="$TMP/sbrun" PS_DIR=/opt/ps \
        timeout 30 bash "$SBATCH" >"$TMP/sb.out" 2>&1
}
if ! have bash; then
    skip "$SBATCH dry runs" "no bash"
else
    if sbatch_dry mpirun && line=$(sed -n 's/^+ //p' "$TMP/sb.out") && [ -n "$line" ]; then
        if [ $can_map = 0 ]; then
            skip "$SBATCH (mpirun) places the servers apart" "no mpirun"
        elif map_check 2 8 "$(echo "$line" | sed "s#^mpirun #mpirun --hostfile $TMP/alloc #")"; then
            ok "$SBATCH dry run (mpirun): 2 servers on node01 alone, 8 workers on node02-03"
        else
            not_ok "$SBATCH dry run (mpirun) places the servers apart: $line"
            show "$TMP/map.out" 20
        fi
    else
        not_ok "$SBATCH dry run (mpirun) prints its command"
        show "$TMP/sb.out"
    fi
    # srun: the multi-prog ranges must cover 0..N-1 once each, servers first,
    # and the per-rank hostfile must keep the servers' node to themselves.
    if sbatch_dry srun && [ -f "$TMP/sbrun/multi-prog.conf" ] && [ -f "$TMP/sbrun/hostfile" ]; then
        check_srun() {
            awk 'NR == FNR {
                    split($1, r, "-"); hi = (2 in r) ? r[2] : r[1]
                    for (i = r[1]; i <= hi; i++) { seen[i]++; role[i] = $2 }
                    next
                }
                { host[FNR - 1] = $1; n = FNR }
                END {
                    for (i = 0; i < n; i++) {
                        if (seen[i] != 1) exit 1
                        if (role[i] ~ /ps-server$/) srv[host[i]] = 1
                        else if (role[i] ~ /ps-worker$/) wk[host[i]] = 1
                        else exit 1
                    }
                    for (h in srv) if (h in wk) exit 1
                    if (length(seen) != n || !(0 in seen) || role[0] !~ /ps-server$/) exit 1
                }' "$TMP/sbrun/multi-prog.conf" "$TMP/sbrun/hostfile" &&
                grep -q -- '--distribution=arbitrary --multi-prog' "$TMP/sb.out"
        }
        if check_srun; then
            ok "$SBATCH dry run (srun): multi-prog ranks cover every task once, servers alone on node01"
        else
            not_ok "$SBATCH dry run (srun): multi-prog and hostfile agree"
            show "$TMP/sbrun/multi-prog.conf"
            show "$TMP/sbrun/hostfile" 12
        fi
    else
        not_ok "$SBATCH dry run (srun) writes its multi-prog file and hostfile"
        show "$TMP/sb.out"
    fi
fi

# --- the Slurm script's launcher: ps-launch ----------------------------------------

if "$D/ps-launch" --help >"$TMP/pl.help" 2>&1 &&
    grep -q -- '--retries N' "$TMP/pl.help" && grep -q -- '--checkpoint-dir DIR' "$TMP/pl.help" &&
    grep -q 'right after every word' "$TMP/pl.help"; then
    ok "$D/ps-launch --help documents --retries, --checkpoint-dir and where --resume goes"
else
    not_ok "$D/ps-launch --help documents its options"
    show "$TMP/pl.help"
fi

# Stand-in mpirun and srun: each records its arguments (srun also its
# multi-prog file); the first call leaves a whole checkpoint of step 8 in
# $CKD and fails, the second succeeds.
for prog in mpirun srun; do
    cat >"$TMP/fakebin/$prog" <<'EOF'
#!/bin/sh
echo "ARGS $*" >>"$CALLS"
for a; do last=$a; done
[ "$(basename "$0")" = srun ] && sed 's/^/CONF /' "$last" >>"$CALLS"
if [ "$(grep -c '^ARGS' "$CALLS")" = 1 ]; then
    mkdir -p "$CKD/step-00000008" && : >"$CKD/step-00000008/MANIFEST"
    exit 9
fi
EOF
    chmod +x "$TMP/fakebin/$prog"
done
sbatch_run() { # LAUNCHER: the calls in $TMP/calls.$1, output in $TMP/sbr.$1.out
    rm -rf "$TMP/sbck"
    PATH="$TMP/fakebin:$PATH" SLURM_JOB_NODELIST='node[01-03]' SLURM_NTASKS_PER_NODE=4 \
        SLURM_JOB_ID=1 LAUNCHER=$1 RUN_DIR="$TMP/sbrun.$1" PS_DIR="$PWD" RETRY_DELAY=0 \
        SERVER_FLAGS="--checkpoint-dir $TMP/sbck --checkpoint-every 4" \
        CALLS="$TMP/calls.$1" CKD="$TMP/sbck" timeout 30 bash "$SBATCH" >"$TMP/sbr.$1.out" 2>&1
}
if ! have bash; then
    skip "$SBATCH reruns through ps-launch" "no bash"
else
    for l in mpirun srun; do
        sbatch_run $l
        rc=$?
        if [ $l = mpirun ]; then
            pre="^ARGS .*"
        else
            pre="^CONF 0-1 .*"
        fi
        first=$(grep -c "$pre/bin/ps-server --checkpoint-dir $TMP/sbck " "$TMP/calls.$l")
        rerun=$(grep -c "$pre/bin/ps-server --resume $TMP/sbck --checkpoint-dir $TMP/sbck " \
            "$TMP/calls.$l")
        if [ $rc = 0 ] && [ "$(grep -c '^ARGS' "$TMP/calls.$l")" = 2 ] && [ "$first" = 1 ] &&
            [ "$rerun" = 1 ] &&
            grep -q 'attempt 2/4: resuming from step 8' "$TMP/sbrun.$l/launch.log"; then
            ok "$SBATCH ($l) fails once after a checkpoint: ps-launch reruns it with --resume, logged"
        else
            not_ok "$SBATCH ($l) reruns through ps-launch with --resume (exit $rc)"
            show "$TMP/calls.$l"
            show "$TMP/sbr.$l.out"
        fi
    done
fi

# --- the Kubernetes MPIJob ------------------------------------------------------

if [ ! -x "$PY" ] || ! "$PY" -c 'import yaml' 2>/dev/null; then
    skip "$MPIJOB parses" "no PyYAML for $PY (Debian: python3-yaml)"
else
    # Prints the launcher's mpirun line (shell-quoted), then the hostfile
    # the operator would write, then the server and worker rank counts.
    if "$PY" - "$MPIJOB" >"$TMP/k8s.out" 2>&1 <<'EOF'; then
import shlex, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
assert len(docs) == 1, "one document"
j = docs[0]
assert j["apiVersion"] == "kubeflow.org/v2beta1" and j["kind"] == "MPIJob", "v2beta1 MPIJob"
spec = j["spec"]
slots = int(spec["slotsPerWorker"])
rs = spec["mpiReplicaSpecs"]
assert rs["Launcher"]["replicas"] == 1, "one launcher"
nw_pods = int(rs["Worker"]["replicas"])
c = rs["Launcher"]["template"]["spec"]["containers"][0]
argv = list(c.get("command", [])) + [str(a) for a in c.get("args", [])]
assert argv[0] == "mpirun" and argv.count(":") == 1, "an MPMD mpirun line"
cut = argv.index(":")
ns = int(argv[argv.index("-np") + 1])
nw = int(argv[cut + 1 + argv[cut + 1:].index("-np") + 1])
assert ns == slots, "server ranks (%d) fill exactly the first pod (slotsPerWorker %d)" % (ns, slots)
assert nw <= (nw_pods - 1) * slots, "worker ranks fit the other Worker pods"
w = rs["Worker"]["template"]["spec"]["containers"][0]
assert w["command"][0].endswith("sshd"), "Worker pods run sshd"
print(" ".join(shlex.quote(a) for a in argv))
name, nsp = j["metadata"]["name"], j["metadata"].get("namespace", "default")
for i in range(nw_pods):
    print("HOST %s-worker-%d.%s-worker.%s.svc slots=%d" % (name, i, name, nsp, slots))
print("COUNTS %d %d" % (ns, nw))
EOF
        ok "$MPIJOB parses: a v2beta1 MPIJob, MPMD launcher, servers sized to one pod"
        sed -n 's/^HOST //p' "$TMP/k8s.out" >"$TMP/k8s.hosts"
        k_ns=$(sed -n 's/^COUNTS \([0-9]*\) .*/\1/p' "$TMP/k8s.out")
        k_nw=$(sed -n 's/^COUNTS [0-9]* \([0-9]*\)$/\1/p' "$TMP/k8s.out")
        line=$(head -1 "$TMP/k8s.out" | sed "s#^mpirun #mpirun --hostfile $TMP/k8s.hosts #")
        if [ $can_map = 0 ]; then
            skip "$MPIJOB places the servers apart" "no mpirun"
        elif map_check "$k_ns" "$k_nw" "$line"; then
            ok "$MPIJOB: Open MPI maps the $k_ns servers alone onto Worker pod 0, $k_nw workers after"
        else
            not_ok "$MPIJOB: the servers get a Worker pod of their own"
            show "$TMP/map.out" 20
        fi
    else
        not_ok "$MPIJOB parses as a v2beta1 MPIJob with an MPMD launcher"
        show "$TMP/k8s.out"
    fi
fi

# --- the container image ----------------------------------------------------------

if [ ! -f "$DOCKERFILE" ]; then
    not_ok "$DOCKERFILE exists"
else
    froms=$(grep -ci '^FROM ' "$DOCKERFILE")
    debs=$(grep -Eic '^FROM +debian:(12|bookworm)([-.@ ]|$)' "$DOCKERFILE")
    check "$DOCKERFILE: every stage ($froms) is Debian 12" [ "$froms" -ge 1 ] && [ "$debs" = "$froms" ]
    # CI's install step is `sh deploy/install-deps.sh`: the image must use
    # the same script, and build after it.
    inst=$(grep -n '^RUN .*sh deploy/install-deps\.sh' "$DOCKERFILE" | head -1 | cut -d: -f1)
    mk=$(grep -n '^RUN .*\bmake\b' "$DOCKERFILE" | head -1 | cut -d: -f1)
    if grep -q 'sh deploy/install-deps\.sh' .ci/run && [ -n "$inst" ] && [ -n "$mk" ] &&
        [ "$mk" -gt "$inst" ]; then
        ok "$DOCKERFILE: RUN sh deploy/install-deps.sh (as .ci/run does), then RUN make"
    else
        not_ok "$DOCKERFILE: installs with deploy/install-deps.sh as .ci/run does, then runs make"
    fi
    missing=""
    for src in $(awk 'toupper($1) == "COPY" && $2 !~ /^--/ { for (i = 2; i < NF; i++) print $i }' \
        "$DOCKERFILE"); do
        [ -e "$src" ] || missing="$missing $src"
    done
    check "$DOCKERFILE: every COPY source exists in the repository${missing:+ (missing:$missing)}" \
        [ -z "$missing" ]
    # The run-time stage's apt-get line: its packages, checked against this
    # machine's package index and against the libraries the binaries link.
    pkgs=$(awk '/^FROM/ { last = NR } { line[NR] = $0 } END {
            for (i = last; i <= NR; i++) print line[i] }' "$DOCKERFILE" |
        sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | grep 'apt-get install' |
        tr ' ' '\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' |
        grep -Ev '^(apt-get|install|rm|update|RUN)$' | tr '\n' ' ' | sed 's/ $//')
    if ! have apt-cache; then
        skip "$DOCKERFILE: run-time packages exist" "no apt-cache"
    else
        unknown=""
        for p in $pkgs; do
            apt-cache show "$p" >/dev/null 2>&1 || unknown="$unknown $p"
        done
        shown=$pkgs
        if [ -n "$pkgs" ] && [ -z "$unknown" ]; then
            ok "$DOCKERFILE: run-time packages known to apt: $shown"
        else
            not_ok "$DOCKERFILE: run-time packages known to apt: $shown${unknown:+; unknown:$unknown}"
        fi
    fi
    if [ ! -x "$SERVER" ] || [ ! -x "$WORKER" ] || ! have readelf || ! have dpkg; then
        skip "$DOCKERFILE: run-time packages provide the linked libraries" \
            "needs built binaries, readelf and dpkg"
    else
        uncovered=""
        # The image builds the plain binaries; a sanitizer build's runtime
        # (libasan, libubsan) is never shipped.
        for lib in $(readelf -d "$SERVER" "$WORKER" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' |
            grep -v -E '^lib(asan|ubsan|lsan|tsan)\.' | sort -u); do
            path=$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')
            # dpkg knows a file by the path its package ships: try the
            # link, its target (alternatives), and both sides of /usr-merge.
            owner=""
            for cand in "$path" "$(readlink -f "$path")" "/usr$path" "${path#/usr}"; do
                [ -n "$cand" ] || continue
                owner=$(dpkg -S "$cand" 2>/dev/null | head -1 | cut -d: -f1)
                [ -n "$owner" ] && break
            done
            case " libc6 $pkgs " in
            *" $owner "*) ;;
            *) uncovered="$uncovered $lib(${owner:-?})" ;;
            esac
        done
        check "$DOCKERFILE: run-time packages provide every library the binaries link${uncovered:+; not:$uncovered}" \
            [ -z "$uncovered" ]
    fi
    # The image and the MPIJob must agree on paths and the ssh set-up.
    consistent=1
    for pair in "$DOCKERFILE:/opt/ps/bin/" "$MPIJOB:/opt/ps/bin/ps-server" \
        "$DOCKERFILE:useradd .*mpiuser" "$MPIJOB:sshAuthMountPath: /home/mpiuser/.ssh" \
        "$DOCKERFILE:/home/mpiuser/.sshd_config" "$MPIJOB:/home/mpiuser/.sshd_config"; do
        grep -q -- "${pair#*:}" "${pair%%:*}" || consistent=0
    done
    check "$DOCKERFILE and $MPIJOB agree on /opt/ps/bin, mpiuser and the sshd config" [ $consistent = 1 ]
fi
