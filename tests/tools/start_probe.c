/*
 * start_probe: a minimal libpsclient worker (ps.h only) that declares one
 * tensor of N floats, plans STEPS_PER_EPOCH x EPOCHS steps and reports what
 * its start-up said, so a test can see every rank's view of a failed
 * start (test_resume.sh: a --resume checkpoint of another model).
 *
 *   mpirun -np S ps-server ... : -np W start_probe N STEPS_PER_EPOCH EPOCHS
 *
 * Prints one line per worker:
 *   "start_probe[RANK]: ps_start: ok" or
 *   "start_probe[RANK]: ps_start: CODE_TEXT: MESSAGE"
 * then pushes zero gradients for every planned step when the start
 * succeeded; exits 0 only when the whole job ended well.
 */
#include "ps.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: start_probe N STEPS_PER_EPOCH EPOCHS\n");
        return 64;
    }
    int64_t n = strtoll(argv[1], NULL, 10);
    uint64_t spe = strtoull(argv[2], NULL, 10), epochs = strtoull(argv[3], NULL, 10);
    ps_options_t o = PS_OPTIONS_INIT;
    o.name = "start_probe";
    ps_t *ps = NULL;
    if (ps_init(&ps, &argc, &argv, &o) != 0) {
        return 1;
    }
    ps_info_t in;
    ps_info(ps, &in);
    ps_declare(ps, "w", 1, &n, NULL);
    ps_plan(ps, spe, spe * epochs);
    int rv = ps_start(ps);
    if (rv == 0) {
        printf("start_probe[%d]: ps_start: ok\n", in.rank);
    } else {
        printf("start_probe[%d]: ps_start: %s: %s\n", in.rank, ps_strerror(rv), ps_last_error());
    }
    fflush(stdout);
    for (uint64_t s = 0; rv == 0 && s < spe * epochs; s++) {
        rv = ps_step(ps, 1);
    }
    int end = ps_finalize(&ps);
    return rv == 0 && end == 0 ? 0 : 1;
}
