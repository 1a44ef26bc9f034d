#!/bin/sh
# `make run` (deploy/run-fmnist.sh, 1 epoch here) on a terminal and off one.
#
#   1. Under a pseudo-terminal (script(1)): the terminal shows the progress
#      bar, with samples/s and the time left; every frame's time left agrees
#      with the formula (steps left) x (samples per step) / (samples/s), the
#      last frame says 0:00, and the last frame's samples/s is near the
#      epoch line's.  The run folder's log.txt has the plain per-epoch line
#      and no byte of the bar (no CR, no ESC).
#   2. With EXTRA_WORKER_FLAGS=--progress plain on that terminal: no bar
#      (the user's flag wins over what make run asks for).
#   3. Output to a file (CI): no bar on stdout or in the log, the plain
#      epoch line in both, the closing summary lines on stdout in order.
#   4. PS_PROGRESS_AUTO=sometimes: the job fails, naming the variable.
. "$(dirname "$0")/lib.sh"

CR=$(printf '\r')
ESC=$(printf '\033')
STEPS=469 # ceil(60000 / (2 workers x batch 64))
PER_STEP=128

# The bar's bytes would make one long line of a log: shown without them.
show() { LC_ALL=C tr -d "$CR$ESC" <"$1" | cut -c1-240 | sed 's/^/#   /' | tail -n "${2:-10}"; }

# run_job NAME [script|pipe [VAR=VALUE...]]: make run's script for 1 epoch
# into $TMP/NAME, with stdout and stderr in $TMP/NAME.out; through a pty
# when $2 is "script"; $3 is added to its environment.
run_job() {
    _env="RUN_DIR=$TMP/$1 EPOCHS=1 BINDIR=$BINDIR"
    if [ "${2:-}" = script ]; then
        # shellcheck disable=SC2086
        timeout -k 5 300 script -qec "env $_env ${3:-} sh deploy/run-fmnist.sh" /dev/null \
            >"$TMP/$1.out" 2>&1 </dev/null
    else
        # shellcheck disable=SC2086
        timeout -k 5 300 env $_env ${3:-} sh deploy/run-fmnist.sh >"$TMP/$1.out" 2>&1 </dev/null
    fi
}

# The bar's frames in FILE, one per line (another rank's line may follow
# a frame before the next CR): "epoch E/N [bar] DONE/PER loss L
# SPS samples/s M:SS left" (CR and ESC[K taken off).
frames() {
    LC_ALL=C tr "$CR" '\n' <"$1" | LC_ALL=C sed "s/${ESC}\[K/&\n/g" | LC_ALL=C grep -a "${ESC}\[K\$" |
        LC_ALL=C sed -n "s/${ESC}\[K\$//p" | grep -a '^epoch '
}

# FILE as lines, a CR starting a new one and ESC[K taken off: what the
# terminal shows, bar frames each on their own line.
lines() {
    LC_ALL=C tr "$CR" '\n' <"$1" | LC_ALL=C sed "s/${ESC}\[K//g"
}

has_byte() {
    LC_ALL=C grep -aq "$1" "$2"
}

EPOCH_LINE='^epoch 1/1  step 469  train_loss [0-9.]*  test_loss [0-9.]*  test_acc [0-9.]*  [0-9]* samples/s'

if ! command -v script >/dev/null 2>&1; then
    for what in "shows the bar" "the bar's time left and rate" "log.txt without the bar" \
        "the user's --progress wins"; do
        skip "make run on a terminal: $what" "no script(1) (util-linux) for a pty"
    done
else
    run_job tty script
    rc=$?
    frames "$TMP/tty.out" >"$TMP/tty.frames"
    nf=$(grep -c "^epoch 1/1 \[[#.]*\] [0-9]*/$STEPS loss [0-9.]* [0-9]* samples/s [0-9]*:[0-9][0-9] left\$" \
        "$TMP/tty.frames")
    if [ $rc = 0 ] && [ "$nf" -ge 2 ] && lines "$TMP/tty.out" | grep -aq "$EPOCH_LINE"; then
        ok "make run on a terminal: the bar with samples/s and time left ($nf frames) and the epoch line"
    else
        not_ok "make run on a terminal shows the bar (exit $rc, $nf frames with a rate)"
        show "$TMP/tty.out" 20
    fi
    # The first frame has no rate yet (dashes).  Time left, re-derived from
    # the frame's own figures: every step but the epoch's last is 128
    # samples, so t_left = (469 - done) * 128 / samples_per_s, within the
    # rounding to whole seconds and whole samples/s.  The epoch line's
    # samples/s counts the first step too, so the two differ a little (a
    # rate without the W workers would be half).
    ep_sps=$(sed -n 's/.*test_acc [0-9.]*  \([0-9]*\) samples\/s.*/\1/p' "$TMP/tty/log.txt")
    if awk -v steps=$STEPS -v g=$PER_STEP -v ep="$ep_sps" '
        NR == 1 && $7 != "-" {
            printf "first frame \"%s\": no rate yet, want dashes\n", $0; bad = 1
        }
        $8 == "samples/s" && $7 ~ /^[0-9]+$/ {
            split($4, d, "/"); done = d[1] + 0; sps = $7 + 0
            split($9, t, ":"); left = t[1] * 60 + t[2]
            want = (steps - done) * g / sps
            if (left < want - 1.01 || left > want + 1.01) {
                printf "frame \"%s\": %d s left, want %.2f\n", $0, left, want; bad = 1
            }
            last = $0; last_done = done; last_left = left; last_sps = sps
        }
        END {
            if (last_done != steps || last_left != 0) {
                printf "last frame \"%s\": want %d/%d and 0:00 left\n", last, steps, steps; bad = 1
            }
            if (!(ep > 0) || last_sps < 0.6 * ep || last_sps > 1.6 * ep) {
                printf "last frame %s samples/s, epoch line %s samples/s\n", last_sps, ep; bad = 1
            }
            exit bad
        }' "$TMP/tty.frames" >"$TMP/tty.check"; then
        ok "the bar's time left is (steps left) x 128 / samples/s, 0:00 at the end; its rate is the epoch's"
    else
        not_ok "the bar's time left and samples/s agree with its steps"
        show "$TMP/tty.check" 10
    fi
    if [ -s "$TMP/tty/log.txt" ] && ! has_byte "$CR" "$TMP/tty/log.txt" &&
        ! has_byte "$ESC" "$TMP/tty/log.txt" && ! grep -q 'left' "$TMP/tty/log.txt" &&
        grep -q "$EPOCH_LINE" "$TMP/tty/log.txt"; then
        ok "make run on a terminal: log.txt has the plain epoch line and no byte of the bar"
    else
        not_ok "make run on a terminal: log.txt without the bar"
        show "$TMP/tty/log.txt" 20
    fi

    run_job plain script "EXTRA_WORKER_FLAGS='--progress plain'"
    rc=$?
    if [ $rc = 0 ] && ! has_byte "$ESC" "$TMP/plain.out" && ! grep -aq 'left' "$TMP/plain.out" &&
        grep -aq "$EPOCH_LINE" "$TMP/plain.out"; then
        ok "make run on a terminal with EXTRA_WORKER_FLAGS=--progress plain: no bar"
    else
        not_ok "make run on a terminal: the user's --progress plain wins (exit $rc)"
        show "$TMP/plain.out" 20
    fi
fi

run_job pipe
rc=$?
if [ $rc = 0 ] && ! has_byte "$CR" "$TMP/pipe.out" && ! has_byte "$ESC" "$TMP/pipe.out" &&
    ! has_byte "$CR" "$TMP/pipe/log.txt" && grep -q "$EPOCH_LINE" "$TMP/pipe.out" &&
    grep -q "$EPOCH_LINE" "$TMP/pipe/log.txt" &&
    [ "$(sed -n 1p "$TMP/pipe.out")" = "run folder: $TMP/pipe" ] &&
    [ "$(tail -n 1 "$TMP/pipe.out")" = "metrics: $TMP/pipe/metrics.jsonl" ]; then
    ok "make run into a file: plain lines only, on stdout and in log.txt, summary in order"
else
    not_ok "make run into a file: no bar (exit $rc)"
    show "$TMP/pipe.out" 20
fi

run_job badenv pipe PS_PROGRESS_AUTO=sometimes
rc=$?
if [ $rc != 0 ] && grep -q "PS_PROGRESS_AUTO 'sometimes': want bar or plain" "$TMP/badenv.out"; then
    ok "PS_PROGRESS_AUTO=sometimes: the job fails naming the variable (exit $rc)"
else
    not_ok "PS_PROGRESS_AUTO=sometimes is refused with a message (exit $rc)"
    show "$TMP/badenv.out" 20
fi
