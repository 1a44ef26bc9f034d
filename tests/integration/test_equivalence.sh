#!/bin/sh
# Real mpirun jobs whose final models must agree:
#   W workers x S servers  ==  one worker with batch W x K x B
#   K=4 x B=16             ==  K=1 x B=64
#   uneven shards           ==  one worker (no hang, no bias)
#   S=2 (and S=3)           ==  S=1, bit for bit
#   two identical runs      ==  bit for bit
#   --streams 3 and 16      ==  --streams 1, bit for bit
#   shm (the one-host default: shared memory, headers over ipc with peer
#   credentials), ipc, tcp (CurveZMQ), each with --insecure, and workers
#   on two planes at once  ==  bit for bit
#   shm == ipc in ssp, async (one worker), --compress fp16/bf16,
#   --on-nonfinite skip, and a checkpoint resumed, bit for bit
# "==" up to float summation order where the batch is split differently.
. "$(dirname "$0")/lib.sh"

make_csv "$TMP/train.csv" 203 20 4
SRV="--lr 0.1 --momentum 0.9 --chunk-kib 4"
MODEL="--data csv:$TMP/train.csv --model mlp --hidden 48 --epochs 3 --no-shuffle --seed 3"

run() { # name S W "extra server flags" "extra worker flags"
    psrun 120 "$2" "$SRV --save $TMP/$1.st $4" "$3" "$MODEL $5" "$TMP/$1.log"
    _rc=$?
    [ $_rc -eq 0 ] || { echo "# job $1 failed ($_rc):"; sed 's/^/#   /' "$TMP/$1.log" | tail -15; }
    return $_rc
}

run w1b64 1 1 "" "--batch-size 64" && ok "reference job: 1 worker, batch 64" ||
    not_ok "reference job: 1 worker, batch 64"
run w2b32 1 2 "" "--batch-size 32" && check "2 workers x batch 32 == 1 worker x batch 64" \
    close_to "$TMP/w1b64.st" "$TMP/w2b32.st" 1e-4 1e-5 || not_ok "2 workers x batch 32 ran"
run k4b16 1 1 "" "--batch-size 16 --accumulate 4" &&
    check "accumulate 4 x batch 16 == accumulate 1 x batch 64" \
        close_to "$TMP/w1b64.st" "$TMP/k4b16.st" 1e-4 1e-5 || not_ok "accumulate 4 x 16 ran"
run w2k2b16 2 2 "" "--batch-size 16 --accumulate 2" &&
    check "2 workers x 2 servers x K=2 x B=16 == 1 worker x batch 64" \
        close_to "$TMP/w1b64.st" "$TMP/w2k2b16.st" 1e-4 1e-5 || not_ok "2x2 K=2 job ran"

# 203 samples over 3 workers: shards of 68/68/67, last step partial.
run w1b48 1 1 "" "--batch-size 48" || not_ok "reference job: batch 48"
run w3b16 1 3 "" "--batch-size 16" && check "uneven shards: 3 workers x 16 == 1 worker x 48" \
    close_to "$TMP/w1b48.st" "$TMP/w3b16.st" 1e-4 1e-5 || not_ok "uneven shards job ran"

run s1 1 2 "" "--batch-size 32" && run s2 2 2 "" "--batch-size 32" &&
    check "2 servers == 1 server, bit for bit" same_bits "$TMP/s1.st" "$TMP/s2.st" ||
    not_ok "server-count jobs ran"
run s3 3 2 "" "--batch-size 32" && check "3 servers == 1 server, bit for bit" \
    same_bits "$TMP/s1.st" "$TMP/s3.st" || not_ok "3-server job ran"

SHUF="--batch-size 16 --seed 11"
run rep1 2 3 "--nesterov --weight-decay 0.001" "$SHUF" &&
    run rep2 2 3 "--nesterov --weight-decay 0.001" "$SHUF" &&
    check "two identical shuffled runs give identical --save files" \
        same_bits "$TMP/rep1.st" "$TMP/rep2.st" || not_ok "repeat jobs ran"

# Streams: a server's chunks take turns over the worker's connections
# (5 chunks of 1 KiB elements: server 0 of 2 holds chunks 0, 2, 4 and gets
# them on streams 0, 1, 2; server 1 holds 1, 3 on streams 0, 1).  Sync sums
# in rank order whatever the arrival order, so the connections must not
# change a bit.  Servers with 3 and 4 I/O threads bind as many lanes, which
# the streams connect through by rank.  No --quiet: the servers' summaries
# count the connections
# that carried messages, which shows the streams were really used.
WIDE="--data csv:$TMP/train.csv --model mlp --hidden 200 --epochs 2 --batch-size 32 --seed 5"
streams_run() { # name S "worker flags" [server I/O threads, i.e. lanes]
    # shellcheck disable=SC2086
    timeout -k 5 120 mpirun --oversubscribe -np "$2" "$SERVER" $SRV --io-threads "${4:-1}" \
        --save "$TMP/$1.st" : -np 2 "$WORKER" --progress none $WIDE $3 >"$TMP/$1.log" 2>&1 ||
        { echo "# job $1 failed:"; tail -5 "$TMP/$1.log" | sed 's/^/#   /'; return 1; }
}
used() { grep -q "ps-server\[$2\]: connections used: $3 from 2 workers" "$TMP/$1.log"; }
if streams_run one 1 "--streams 1 --io-threads 1" && streams_run three 1 "--streams 3 --io-threads 2" &&
    streams_run three_s2 2 "--streams 3 --io-threads 3" 3 && streams_run many 2 "--streams 16" 4; then
    check "--streams 1: one connection per worker" used one 0 2
    check "--streams 3 on 1 server (5 chunks): 3 connections per worker" used three 0 6
    check "--streams 3 on 2 servers with 3 lanes each: 3 and 2 connections per worker" \
        eval 'used three_s2 0 6 && used three_s2 1 4'
    check "--streams 3 == --streams 1, bit for bit" same_bits "$TMP/one.st" "$TMP/three.st"
    check "--streams 3 on 2 servers == one stream on 1 server, bit for bit" \
        same_bits "$TMP/one.st" "$TMP/three_s2.st"
    check "--streams 16 (more streams than chunks) == one stream, bit for bit" \
        same_bits "$TMP/one.st" "$TMP/many.st"
else
    not_ok "streams jobs ran"
fi

# Transports: the same 2-server job over shm (the default on one host:
# tensors in shared memory, headers over ipc with peer credentials), ipc
# (peer credentials, no encryption), tcp (CurveZMQ), without
# authentication, and with worker 0 on tcp or ipc and worker 1 on shm at
# once (each server then binds both planes).  A tensor's bits must not
# depend on the path it took.
TR="--batch-size 32"
planes() { # name "server flags" [worker 0 flags]: 2 servers, 2 workers
    # shellcheck disable=SC2086
    timeout -k 5 120 mpirun --oversubscribe -np 2 "$SERVER" $SRV $2 --save "$TMP/$1.st" \
        : -np 1 "$WORKER" --progress none $MODEL $TR ${3:-} \
        : -np 1 "$WORKER" --progress none $MODEL $TR >"$TMP/$1.log" 2>&1 ||
        { echo "# job $1 failed:"; tail -5 "$TMP/$1.log" | sed 's/^/#   /'; return 1; }
}
said() { grep -q "ps-server\[0\]: data plane: $2\$" "$TMP/$1.log"; }
if planes shm "" && planes ipc "--transport ipc" && planes tcp "--transport tcp" &&
    planes shm_open "--insecure" && planes ipc_open "--transport ipc --insecure" &&
    planes tcp_open "--transport tcp --insecure" && planes mixed "" "--transport tcp" &&
    planes mixed_ipc "" "--transport ipc" && planes shm_both "--transport shm" "--transport shm"; then
    check "default on one host is shm, headers over ipc with peer credentials" \
        said shm "shm + ipc (peer credentials) to 2 local workers"
    check "--transport ipc on the servers: ipc with peer credentials" \
        said ipc "ipc (peer credentials) to 2 local workers"
    check "--transport tcp on the servers: tcp+CurveZMQ" said tcp "tcp+CurveZMQ to 2 local workers"
    check "--insecure: no authentication on any plane" \
        eval 'said shm_open "shm + ipc (no authentication) to 2 local workers" &&
              said ipc_open "ipc (no authentication) to 2 local workers" &&
              said tcp_open "tcp (no authentication) to 2 local workers"'
    check "worker 0 with --transport tcp: one worker on each plane" \
        said mixed "shm + ipc (peer credentials) to 1 local worker, tcp+CurveZMQ to 1 local worker"
    check "worker 0 with --transport ipc: one worker on shm, one on ipc" \
        said mixed_ipc "shm + ipc (peer credentials) to 1 local worker, ipc (peer credentials) to 1 local worker"
    check "the shm job moved its tensors through shared memory (a few MB on the socket at most)" \
        sh -c "grep 'ps-server\[0\]: done:' '$TMP/shm.log' | grep -q ' in 0\.[0-9] MB, out 0\.[0-9] MB'"
    check "the same default job again (shm) == the 2-server job above, bit for bit" \
        same_bits "$TMP/s2.st" "$TMP/shm.st"
    check "shm == ipc (peer credentials), bit for bit" same_bits "$TMP/ipc.st" "$TMP/shm.st"
    check "tcp (CurveZMQ) == ipc (peer credentials), bit for bit" \
        same_bits "$TMP/ipc.st" "$TMP/tcp.st"
    check "shm --insecure == shm, bit for bit" same_bits "$TMP/shm.st" "$TMP/shm_open.st"
    check "ipc --insecure == ipc, bit for bit" same_bits "$TMP/ipc.st" "$TMP/ipc_open.st"
    check "tcp --insecure == ipc, bit for bit" same_bits "$TMP/ipc.st" "$TMP/tcp_open.st"
    check "one worker on tcp and one on shm == ipc, bit for bit" \
        same_bits "$TMP/ipc.st" "$TMP/mixed.st"
    check "one worker on ipc and one on shm == ipc, bit for bit" \
        same_bits "$TMP/ipc.st" "$TMP/mixed_ipc.st"
    check "--transport shm on every rank == ipc, bit for bit" same_bits "$TMP/ipc.st" "$TMP/shm_both.st"
else
    not_ok "transport jobs ran"
fi

# Shared memory against sockets in every mode that touches the slots:
# ssp (staleness + 1 push slots per chunk) and async, each with one worker
# (with two, which weights a pull gets depends on timing, over any plane), 16-bit pushes, a step dropped for a NaN, and a
# checkpoint resumed.  Each pair differs only in --transport.
pair() { # name S W "server flags" "worker flags"
    run "$1_shm" "$2" "$3" "--transport shm $4" "$5" && run "$1_ipc" "$2" "$3" "--transport ipc $4" "$5"
}
same_pair() { same_bits "$TMP/$1_shm.st" "$TMP/$1_ipc.st"; }
SSP="--mode ssp --staleness 2"
pair ssp 2 1 "$SSP" "--batch-size 16" &&
    check "ssp (staleness 2, 3 slots per chunk) over shm == over ipc, bit for bit" same_pair ssp ||
    not_ok "ssp jobs ran"
pair async 1 1 "--mode async" "--batch-size 16" &&
    check "async, one worker, over shm == over ipc, bit for bit" same_pair async ||
    not_ok "async jobs ran"
pair f16 2 2 "" "--batch-size 32 --compress fp16" &&
    check "--compress fp16 over shm == over ipc, bit for bit" same_pair f16 || not_ok "fp16 jobs ran"
pair bf16 1 2 "" "--batch-size 32 --compress bf16" &&
    check "--compress bf16 over shm == over ipc, bit for bit" same_pair bf16 || not_ok "bf16 jobs ran"
pair nan 2 2 "--on-nonfinite skip" "--batch-size 32 --test-nan-step 3" &&
    check "--on-nonfinite skip (NaN at step 3) over shm == over ipc, bit for bit" same_pair nan ||
    not_ok "non-finite jobs ran"
# A checkpoint every 4 steps over shm, resumed over shm with one more
# epoch, against the same over ipc (the checkpoint's bits too).
MORE=$(echo "$MODEL" | sed 's/--epochs 3/--epochs 4/')
ckpt_pair() { # transport
    rm -rf "$TMP/ck_$1"
    run "ck3_$1" 2 2 "--transport $1 --checkpoint-dir $TMP/ck_$1 --checkpoint-every 4" \
        "--batch-size 32" &&
        psrun 120 2 "$SRV --transport $1 --resume $TMP/ck_$1 --save $TMP/ck4_$1.st" 2 \
            "$MORE --batch-size 32" "$TMP/ck4_$1.log"
}
if ckpt_pair shm && ckpt_pair ipc; then
    check "checkpoint + resume over shm == over ipc, bit for bit" \
        eval 'same_bits "$TMP/ck3_shm.st" "$TMP/ck3_ipc.st" &&
              same_bits "$TMP/ck4_shm.st" "$TMP/ck4_ipc.st"'
    check "the resumed shm job really resumed (it logged a step > 0)" \
        eval '! cmp -s "$TMP/ck3_shm.st" "$TMP/ck4_shm.st"'
else
    not_ok "checkpoint jobs ran"
fi
