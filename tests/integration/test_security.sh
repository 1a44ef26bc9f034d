#!/bin/sh
# The data port under attack (tests/integration/intruder.py, a hostile
# libzmq client in /usr/bin/python3).
#
# 1. Closed port over tcp (CurveZMQ, the default between hosts; forced
#    here with --transport tcp): while the job trains, the intruder keeps
#    connecting a plain-text DEALER, a CURVE DEALER with its own key pair
#    and the server's real public key (from --endpoint-file), and one with
#    a wrong server key, and keeps sending well-formed PUSH/PULL/REGISTER/
#    SHUTDOWN messages.  The job must succeed with a model bit for bit the
#    undisturbed run's, every server must report "rejected 0" (not one
#    message got through to be processed), refused handshakes > 0, and no
#    intruder handshake may ever succeed.
# 1b. Closed port over ipc (peer credentials, the default on one host): the
#    same intruder, a process of our own user that is not a rank, connects
#    to the ipc endpoint in --endpoint-file (the folder is ours, so it can
#    reach the socket).  The same must hold: the model bit for bit the
#    undisturbed one's, rejected 0, handshakes refused and counted, none
#    succeeded, and the servers' log names the intruder's own pid as the
#    refused process.
# 2. Open port (--insecure): the intruder sends a counted corpus of
#    malformed and unauthorised messages (random bytes, wrong frame counts,
#    every truncated header length, oversized frames, wrong magic/version/
#    type/flags/reserved, payload-length lies, PUSH/PULL/INIT/REGISTER for
#    real and made-up chunks and steps, garbage layouts) from routing ids
#    that are not the workers', with sender fields that match the id and
#    that do not; and, once every worker has connected, a burst with the
#    workers' own routing ids, which the ROUTER must refuse, and one as
#    each worker on a stream it did not open (ids that are free), which the
#    servers must refuse as "sender" (every worker's stream count is known
#    from start-up).  The job must succeed bit for bit, and the servers
#    must count as rejected exactly the messages the intruder sent (the
#    burst with the workers' ids is dropped by the ROUTER and never reaches
#    the server loop).
# A worker holding another worker's key is tests/unit/test_loop.c's
# test_impostor_with_other_key (the key pairs are made in-process there).
#
# Not tested, on purpose: with --insecure, a client that takes a worker's
# routing id ('w' + rank) before that worker connects denies it service
# (the ROUTER refuses the real worker's connection as a duplicate); only
# CurveZMQ prevents that, which is why it is the default.
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
INTRUDER="$(dirname "$0")/intruder.py"

if ! "$PY" -c 'import zmq, sys; sys.exit(not zmq.has("curve"))' 2>/dev/null; then
    echo "ok 1 - data port under attack # SKIP $PY has no zmq module with CURVE"
    exit 0
fi

make_csv "$TMP/train.csv" 203 20 4
# 2 servers (a chunk each: 1204 parameters in chunks of 1024), 2 workers,
# 40 epochs of 7 steps with a 10 ms pause per step: about 3 s of training.
SRV="--lr 0.1 --momentum 0.9 --chunk-kib 4"
MODEL="--data csv:$TMP/train.csv --model mlp --hidden 48 --epochs 40 --batch-size 16"
MODEL="$MODEL --no-shuffle --seed 3 --test-delay-ms 10"
EPOCHS=40 PARAMS=1204 CHUNK_ELEMS=1024
IPIDS=""

cleanup() {
    for p in $IPIDS; do
        kill "$p" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap 'cleanup' EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

# job NAME "server flags": one job with the servers' summaries (no --quiet),
# model in NAME.st, worker 0's metrics in NAME.jsonl, log in NAME.log.
job() {
    # shellcheck disable=SC2086
    timeout -k 5 120 mpirun --oversubscribe -np 2 "$SERVER" $SRV $2 --save "$TMP/$1.st" \
        --endpoint-file "$TMP/$1.ep" \
        : -np 2 "$WORKER" --progress none $MODEL --metrics "$TMP/$1.jsonl" \
        >"$TMP/$1.log" 2>&1
    _rc=$?
    [ $_rc -eq 0 ] || { echo "# job $1 failed ($_rc):"; sed 's/^/#   /' "$TMP/$1.log" | tail -15; }
    return $_rc
}

# intruder NAME MODE: start the attack on job NAME in the background.
intruder() {
    "$PY" "$INTRUDER" "$2" --endpoint-file "$TMP/$1.ep" --stop-file "$TMP/$1.stop" \
        --wait-file "$TMP/$1.jsonl" --report "$TMP/$1.json" --workers 2 \
        --params $PARAMS --chunk-elems $CHUNK_ELEMS --max-seconds 90 \
        >"$TMP/$1.intruder.log" 2>&1 &
    IPID=$!
    IPIDS="$IPIDS $IPID"
}

# intruder_wait NAME: stop the attack, wait for its report.
intruder_wait() {
    touch "$TMP/$1.stop"
    wait "$IPID"
    _rc=$?
    [ $_rc -eq 0 ] && [ -s "$TMP/$1.json" ] && return 0
    echo "# intruder failed ($_rc):"
    sed 's/^/#   /' "$TMP/$1.intruder.log" | tail -10
    return 1
}

# field NAME KEY: one number from the intruder's JSON report.
field() {
    "$PY" -c 'import json, sys
try:
    print(int(json.load(open(sys.argv[1])).get(sys.argv[2], -1)))
except Exception:
    print(-1)' "$TMP/$1.json" "$2"
}

# Sums over the servers' end-of-run summaries.
nsummaries() { grep -c 'ps-server\[[0-9]*\]: done: ' "$1"; }
rejected() {
    sed -n 's/.*ps-server\[[0-9]*\]: done: .* rejected \([0-9]*\),.*/\1/p' "$1" |
        awk '{ s += $1 } END { print s + 0 }'
}
refused() {
    sed -n 's/.*refused handshakes on the data port: \([0-9]*\).*/\1/p' "$1" |
        awk '{ s += $1 } END { print s + 0 }'
}
by_reason() { # LOG [REASON]: "reason count" lines summed over servers, or one count
    sed -n 's/.*ps-server\[[0-9]*\]: rejected (\([a-z]*\)): \([0-9]*\).*/\1 \2/p' "$1" |
        awk -v want="${2:-}" '{ n[$1] += $2 }
            END { if (want != "") { print n[want] + 0; exit }
                  for (r in n) print r, n[r] }' | sort
}

# --- 1. the closed port over tcp (CurveZMQ) --------------------------------

if job A "--transport tcp"; then
    ok "undisturbed secure job (tcp, CurveZMQ), 2 servers x 2 workers"
else
    not_ok "undisturbed secure job (tcp, CurveZMQ), 2 servers x 2 workers"
fi
check "its servers say: data plane: tcp+CurveZMQ to 2 local workers" \
    grep -q "ps-server\[0\]: data plane: tcp+CurveZMQ to 2 local workers" "$TMP/A.log"

intruder B secure
job B "--transport tcp"
rc=$?
intruder_wait B
irc=$?
if [ $rc -eq 0 ]; then
    ok "secure job succeeds while the intruder attacks the data port"
else
    not_ok "secure job succeeds while the intruder attacks the data port (status $rc)"
fi
check "the intruder ran and connected (report written)" [ $irc -eq 0 ]
check "model under attack == undisturbed model, bit for bit" same_bits "$TMP/A.st" "$TMP/B.st"

n_ref=$(refused "$TMP/B.log")
n_rej=$(rejected "$TMP/B.log")
queued=$(($(field B queued_plain) + $(field B queued_curve) + $(field B queued_wrongkey)))
echo "# intruder (secure): $queued messages queued by libzmq on its sockets" \
    "(plain $(field B queued_plain), curve $(field B queued_curve)," \
    "wrong server key $(field B queued_wrongkey))"
echo "# intruder saw $(field B client_handshakes_connected) connections," \
    "$(field B client_handshakes_failed) failed and" \
    "$(field B client_handshakes_succeeded) succeeded handshakes"
echo "# servers: refused handshakes on the data port: $n_ref; rejected messages: $n_rej"
check "the servers refused the intruder's handshakes ($n_ref > 0)" [ "$n_ref" -gt 0 ]
check "no intruder handshake succeeded" [ "$(field B client_handshakes_succeeded)" = 0 ]
if [ "$(nsummaries "$TMP/B.log")" = 2 ] && [ "$n_rej" = 0 ]; then
    ok "both servers report rejected 0: no intruder message reached the server loop"
else
    not_ok "both servers report rejected 0 (saw $(nsummaries "$TMP/B.log") summaries, $n_rej rejected)"
    grep 'ps-server.*\(done\|rejected\)' "$TMP/B.log" | sed 's/^/#   /'
fi
check "the undisturbed job refused no handshake" [ "$(refused "$TMP/A.log")" = 0 ]

# --- 1b. the closed port over ipc (peer credentials) ---------------------------

if job E ""; then
    ok "undisturbed secure job on one host (ipc, peer credentials)"
else
    not_ok "undisturbed secure job on one host (ipc, peer credentials)"
fi
# (the default on one host is shm: the tensors in shared memory, every
# message on this ipc socket, which is what the intruder attacks)
check "its servers say: data plane: shm + ipc (peer credentials) to 2 local workers" \
    grep -q "ps-server\[0\]: data plane: shm + ipc (peer credentials) to 2 local workers" "$TMP/E.log"
check "ipc model == tcp (CurveZMQ) model, bit for bit" same_bits "$TMP/A.st" "$TMP/E.st"

intruder F secure
job F ""
rc=$?
intruder_wait F
irc=$?
attacked=$("$PY" -c 'import json, sys
print(" ".join(json.load(open(sys.argv[1])).get("endpoints", [])))' "$TMP/F.json" 2>/dev/null)
check "the intruder attacked the servers' ipc endpoints ($attacked)" \
    sh -c "echo '$attacked' | grep -Eq '^ipc://[^ ]+/0 ipc://[^ ]+/0\$'"
if [ $rc -eq 0 ]; then
    ok "ipc job succeeds while a same-user process that is not a rank attacks it"
else
    not_ok "ipc job succeeds while a same-user process that is not a rank attacks it (status $rc)"
fi
check "the intruder ran and connected (report written)" [ $irc -eq 0 ]
check "model under attack == undisturbed model, bit for bit" same_bits "$TMP/E.st" "$TMP/F.st"
n_ref=$(refused "$TMP/F.log")
n_rej=$(rejected "$TMP/F.log")
echo "# intruder (ipc): $(field F client_handshakes_connected) connections," \
    "$(field F client_handshakes_failed) failed and" \
    "$(field F client_handshakes_succeeded) succeeded handshakes;" \
    "servers: refused $n_ref, rejected $n_rej"
check "the servers refused the intruder's handshakes ($n_ref > 0)" [ "$n_ref" -gt 0 ]
check "no intruder handshake succeeded" [ "$(field F client_handshakes_succeeded)" = 0 ]
if [ "$(nsummaries "$TMP/F.log")" = 2 ] && [ "$n_rej" = 0 ]; then
    ok "both servers report rejected 0: nothing of the intruder's was processed"
else
    not_ok "both servers report rejected 0 (saw $(nsummaries "$TMP/F.log") summaries, $n_rej rejected)"
fi
check "the servers name the intruder's own pid ($IPID) as refused: not a rank of this job" \
    grep -q "refused an ipc connection from uid $(id -u) pid $IPID: not a rank of this job" \
    "$TMP/F.log"
check "the undisturbed ipc job refused no handshake" [ "$(refused "$TMP/E.log")" = 0 ]

# --- 2. the open port, hostile input ------------------------------------------

if job C "--insecure"; then
    ok "undisturbed --insecure job"
else
    not_ok "undisturbed --insecure job"
fi
check "--insecure model == CurveZMQ model, bit for bit" same_bits "$TMP/A.st" "$TMP/C.st"

intruder D insecure
job D "--insecure"
rc=$?
intruder_wait D
irc=$?
if [ $rc -eq 0 ]; then
    ok "--insecure job survives the hostile corpus and exits 0"
else
    not_ok "--insecure job survives the hostile corpus and exits 0 (status $rc)"
fi
check "the intruder sent its corpus (report written)" [ $irc -eq 0 ]
check "model under hostile input == undisturbed model, bit for bit" \
    same_bits "$TMP/C.st" "$TMP/D.st"

sent=$(field D sent)
fakes=$(field D impersonation_sent)
spare=$(field D spare_stream_sent)
n_rej=$(rejected "$TMP/D.log")
flushed=$(field D flushed_at_epoch_lines)
echo "# intruder (insecure): $sent hostile messages sent from $(field D ids) routing ids" \
    "per server in 2 rounds to 2 servers," \
    "all written out at epoch $flushed of $EPOCHS"
echo "# intruder: $fakes messages sent with the workers' own routing ids after they connected"
echo "# intruder: $spare messages sent as the workers on streams they did not open"
echo "# servers: rejected $n_rej in total"
by_reason "$TMP/D.log" | sed 's/^/#   rejected /'
check "the servers rejected hostile messages ($n_rej > 0)" [ "$n_rej" -gt 0 ]
check "malformed messages are counted as malformed" [ "$(by_reason "$TMP/D.log" malformed)" -gt 0 ]
check "well-formed messages from non-workers are counted as sender" \
    [ "$(by_reason "$TMP/D.log" sender)" -gt 0 ]
n_sender=$(by_reason "$TMP/D.log" sender)
if [ "$spare" -gt 0 ] && [ "$n_sender" -ge "$spare" ]; then
    ok "the $spare messages on streams no worker opened are counted as sender ($n_sender in all)"
else
    not_ok "the $spare messages on streams no worker opened are counted as sender ($n_sender in all)"
fi
if [ "$flushed" -lt 0 ] || [ "$flushed" -gt $((EPOCHS - 10)) ]; then
    skip "every hostile message counted exactly once" \
        "the intruder finished at epoch $flushed of $EPOCHS, too late to be sure all arrived"
elif [ "$n_rej" = "$((sent + spare))" ]; then
    ok "every hostile message counted exactly once ($sent + $spare sent, $n_rej rejected; the $fakes with workers' ids never reached the loop)"
else
    not_ok "every hostile message counted exactly once ($sent + $spare sent, $n_rej rejected, $fakes with workers' ids)"
fi
