#!/bin/sh
# The start-up table (common/ps_startup.h) is one sequence both roles run:
# a side that runs a step the other does not must end the job at once,
# naming both steps, never hang.  build/tools/startup_skew runs the table
# through the real ps_boot step calls, with a step added on one side; the
# real binaries are checked to run the same table by every other test.
. "$(dirname "$0")/lib.sh"

SKEW=$TOOLS/startup_skew

# skew LOG "server args" "worker args": 1 server + 2 workers, bounded.
skew() {
    # shellcheck disable=SC2086
    timeout -k 5 60 mpirun --oversubscribe -np 1 "$SKEW" server $2 : -np 2 "$SKEW" worker $3 \
        >"$1" 2>&1
}

skew "$TMP/same.log" "" ""
rc=$?
check "both sides run the whole table (exit $rc)" \
    sh -c "[ $rc -eq 0 ] && grep -c 'all 10 steps done' '$TMP/same.log' | grep -qx 3"

skew "$TMP/fail.log" "--fail resume" ""
rc=$?
check "a failed agreement ends every rank cleanly (exit $rc, no abort)" \
    sh -c "[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'fails step .resume. on purpose' '$TMP/fail.log' &&
        ! grep -q 'steps done' '$TMP/fail.log' && ! grep -q 'out of step' '$TMP/fail.log'"
check "a failed agreement gives every rank the failing rank's reason" \
    sh -c "[ \$(grep -c 'startup_skew worker [01]: start-up failed: rank 0 fails step .resume. on purpose' '$TMP/fail.log') -eq 2 ]"

# The server runs 'model' twice: it meets the workers at 'plan'.  Every
# rank logs the skew, but MPI_Abort may end some before they print: one
# line naming both steps is what is promised.
skew "$TMP/server.log" "--extra model" ""
rc=$?
check "extra step on the server side ends the job (exit $rc, not a timeout)" \
    sh -c "[ $rc -ne 0 ] && [ $rc -ne 124 ]"
check "the message names both steps (server extra 'model' vs the workers' 'plan')" \
    grep -Eq "out of step: this rank is at step (4 'model' while another is at step 5 'plan'|5 'plan' while another is at step 4 'model')" \
    "$TMP/server.log"

# A worker runs the exchange twice: it meets the others at 'settings', a
# broadcast, where a mismatch would otherwise deadlock or corrupt memory.
skew "$TMP/worker.log" "" "--extra exchange"
rc=$?
check "extra exchange on the worker side ends the job (exit $rc, not a timeout)" \
    sh -c "[ $rc -ne 0 ] && [ $rc -ne 124 ]"
check "the message names both steps ('exchange' vs 'settings')" \
    grep -Eq "out of step: this rank is at step (1 'exchange' while another is at step 2 'settings'|2 'settings' while another is at step 1 'exchange')" \
    "$TMP/worker.log"
for f in same fail server worker; do
    sed "s/^/# $f: /" "$TMP/$f.log" | head -8
done
