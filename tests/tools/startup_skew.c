/*
 * startup_skew: runs the start-up table (common/ps_startup.h) through the
 * real ps_boot step calls, as ps-server and libpsclient do, optionally with
 * one step added on this side only: the "build with a step added on one
 * side" of tests/integration/test_startup.sh.
 *
 *   mpirun -np S startup_skew server [--extra STEP] [--fail STEP]
 *        : -np W startup_skew worker [--extra STEP] [--fail STEP]
 *
 * --extra STEP runs step STEP twice on this role; --fail STEP makes this
 * rank fail that (agreement) step.  Prints "all N steps done" and exits 0
 * when the whole table ran; when an agreement failed, prints the error it
 * got ("startup_skew ROLE RANK: start-up failed: MESSAGE") and exits 1; a
 * skew must end the job inside ps_boot (exit status 2) with both step
 * names.
 */
#include "ps_boot.h"
#include "ps_err.h"
#include "ps_startup.h"

#include <stdio.h>
#include <string.h>

static int step_by_name(const char *name)
{
    for (int s = 0; s < PS_STEP_COUNT; s++) {
        if (strcmp(ps_step_name(s), name) == 0) {
            return s;
        }
    }
    fprintf(stderr, "startup_skew: no start-up step named '%s'\n", name);
    return -1;
}

/* One step of the table, by its kind, with made-up payloads. */
static int run_step(ps_boot_t *b, ps_step_t s, int fail)
{
    uint64_t word = 42;
    switch (ps_step_info((int)s)->kind) {
    case PS_STEP_AGREE:
        if (fail) {
            ps_error_set("rank %d fails step '%s' on purpose", b->world_rank, ps_step_name(s));
        }
        return ps_boot_agree(b, s, fail ? PS_EINVAL : 0);
    case PS_STEP_EXCHANGE_ALL:
        return ps_boot_exchange(b, b->is_server ? "tcp://127.0.0.1:1" : NULL, "", 1);
    case PS_STEP_BCAST_SERVER0:
    case PS_STEP_BCAST_WORKER0:
        ps_boot_bcast(b, s, &word, sizeof word);
        return word == 42 ? 0 : PS_EPROTO;
    }
    return PS_EINVAL;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "server") != 0 && strcmp(argv[1], "worker") != 0)) {
        fprintf(stderr, "usage: startup_skew server|worker [--extra STEP] [--fail STEP]\n");
        return 64;
    }
    int extra = -1, fail = -1;
    for (int i = 2; i + 1 < argc; i += 2) {
        int s = step_by_name(argv[i + 1]);
        if (s < 0) {
            return 64;
        }
        if (strcmp(argv[i], "--extra") == 0) {
            extra = s;
        } else if (strcmp(argv[i], "--fail") == 0) {
            fail = s;
        }
    }
    ps_boot_t b;
    if (ps_boot_init(&b, &argc, &argv, strcmp(argv[1], "server") == 0, 0) != 0) {
        fprintf(stderr, "startup_skew: %s\n", ps_error_msg());
        return 2;
    }
    ps_log_set_name(b.is_server ? "skew-server" : "skew-worker", b.rank);
    int rv = 0, n = 0;
    for (int s = 0; s < PS_STEP_COUNT && rv == 0; s++) {
        for (int times = s == extra ? 2 : 1; times > 0 && rv == 0; times--, n++) {
            rv = run_step(&b, (ps_step_t)s, s == fail);
        }
    }
    if (rv == 0) {
        printf("startup_skew: all %d steps done\n", n);
    } else {
        /* Every rank's error is the failing rank's reason (ps_boot_agree). */
        printf("startup_skew %s %d: start-up failed: %s\n", b.is_server ? "server" : "worker",
               b.rank, ps_error_msg());
    }
    ps_boot_fini(&b);
    return rv == 0 ? 0 : 1;
}
