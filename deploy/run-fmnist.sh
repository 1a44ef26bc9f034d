#!/bin/sh
# `make run`: train the MLP 784-256-128-10 on Fashion-MNIST with 1 server and
# 2 workers on this machine (momentum 0.9, lr 0.05 on a cosine schedule,
# batch 64 per worker, 10 epochs), save the model and the metrics in one run
# folder, and print the test accuracy, the time it took and the time to
# reach 0.8833.
#
# Override with environment variables: RUN_DIR (output folder), EPOCHS,
# SERVERS, WORKERS, EXTRA_SERVER_FLAGS, EXTRA_WORKER_FLAGS, BINDIR (where
# ps-server and ps-worker are, default bin).
#
# When this script's own output is a terminal, the workers draw the progress
# bar (with samples/s and the time left) as a bare mpirun would: mpirun's
# output goes through tee, so ps-worker cannot see the terminal itself and
# is told with PS_PROGRESS_AUTO=bar (a --progress in EXTRA_WORKER_FLAGS still
# wins).  The terminal gets every byte; log.txt gets the same output without
# the bar's frames: the plain per-epoch lines, as when the output is not a
# terminal.
set -eu
RUN_DIR=${RUN_DIR:-runs/fmnist-$(date +%Y%m%d-%H%M%S)}
EPOCHS=${EPOCHS:-10}
SERVERS=${SERVERS:-1}
WORKERS=${WORKERS:-2}
BINDIR=${BINDIR:-bin}
mkdir -p "$RUN_DIR"

# Open MPI refuses to start as root without these; mpirun counts cores, not
# hardware threads, so allow more ranks than cores.
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_base_warn_component_unused=0
if [ -t 1 ]; then
    export PS_PROGRESS_AUTO=bar
fi

# The terminal (or whatever stdout is) gets tee's own output on a shared
# descriptor (fd 3), as with a plain tee; awk reads tee's copy through the
# pipe on fd 4 and drops the bar's frames: "\r" TEXT "ESC[K", TEXT free of "\r", "\n" and ESC
# (worker/wkr_report.h); a line left empty by that was only the bar.
# shellcheck disable=SC2016
STRIP_BAR='BEGIN { frame = "\r[^\r\n\033]*\033\\[K" }
{ had = length($0) > 0; gsub(frame, ""); if (length($0) > 0 || !had) print; fflush() }'

echo "run folder: $RUN_DIR"
start=$(date +%s.%N)
# shellcheck disable=SC2086
{ mpirun -np "$SERVERS" "$BINDIR/ps-server" --lr 0.05 --momentum 0.9 --lr-schedule cosine \
    --save "$RUN_DIR/model.safetensors" ${EXTRA_SERVER_FLAGS:-} \
    : -np "$WORKERS" "$BINDIR/ps-worker" --model mlp --hidden 256,128 --data fashion-mnist \
    --batch-size 64 --epochs "$EPOCHS" --metrics "$RUN_DIR/metrics.jsonl" \
    ${EXTRA_WORKER_FLAGS:-}; echo $? >"$RUN_DIR/.status"; } 2>&1 |
    { { tee /dev/fd/4 >&3; } 4>&1 | awk "$STRIP_BAR" >"$RUN_DIR/log.txt"; } 3>&1
end=$(date +%s.%N)
status=$(cat "$RUN_DIR/.status")
rm -f "$RUN_DIR/.status"
if [ "$status" -ne 0 ]; then
    echo "make run: the training job failed (exit $status); log in $RUN_DIR/log.txt" >&2
    exit "$status"
fi
acc=$(tail -n 1 "$RUN_DIR/metrics.jsonl" | sed -n 's/.*"test_acc":\([0-9.eE+-]*\).*/\1/p')
awk -v a="$acc" -v e="$EPOCHS" -v t0="$start" -v t1="$end" \
    'BEGIN { printf "test accuracy %s after %s epochs, %.1f s wall time\n", a, e, t1 - t0 }'
# Time to accuracy: the first epoch at or above the MLP row of the
# Fashion-MNIST benchmark table (0.8833).
awk -F'[:,}]' '{ for (i = 1; i < NF; i++) { if ($i == "\"test_acc\"") a = $(i + 1);
                                            if ($i == "\"elapsed_s\"") t = $(i + 1) }
                 if (a >= 0.8833) { printf "reached 0.8833 at epoch %d after %.1f s\n", NR, t; f = 1; exit } }
     END { if (!f) print "did not reach 0.8833" }' "$RUN_DIR/metrics.jsonl"
echo "model:   $RUN_DIR/model.safetensors"
echo "metrics: $RUN_DIR/metrics.jsonl"
