/*
 * ps_startup: the job's start-up sequence, written once for both roles.
 *
 * Servers and workers share MPI_COMM_WORLD, so every world collective of
 * the start-up must be made by every rank, in the same order, with the same
 * kind (an agreement, a broadcast from a given root, the exchange).  That
 * order is this table, and nothing else: ps-server (server/srv_main.c) and
 * libpsclient (worker/ps_api.c) each run it step by step through ps_boot's
 * step calls (ps_boot_agree, ps_boot_bcast, ps_boot_exchange), which take a
 * step of this table, not a free-form collective.
 *
 * Each step's number travels with the step's own collective (ps_boot.c), so
 * ranks that are not at the same step notice at once and the job ends with
 * both step names (exit status 2) instead of hanging in mismatched MPI calls.
 *
 * Plain C, no MPI: unit tests read the table.
 */
#ifndef PS_STARTUP_H
#define PS_STARTUP_H

typedef enum {
    PS_STEP_FLAGS,    /* agree: flags valid everywhere; servers' data ports bound */
    PS_STEP_EXCHANGE, /* exchange: every rank's endpoints, public key, streams, pid */
    PS_STEP_SETTINGS, /* server 0 -> all: the servers' settings (ps_srvinfo_t) */
    PS_STEP_PORTS,    /* agree: servers' allow lists and endpoint file; workers' data
                         and model declared */
    PS_STEP_MODEL,    /* agree: the workers declared the same model and plan */
    PS_STEP_PLAN,     /* worker 0 -> all: the training plan (ps_planinfo_t) */
    PS_STEP_RESUME,   /* agree: the servers loaded the same --resume checkpoint */
    PS_STEP_REGISTER, /* agree: the data plane is up and worker 0's model registered */
    PS_STEP_START,    /* server 0 -> all: the step training starts at (resume) */
    PS_STEP_DONE,     /* agree, after training: the servers' --save and trace */
    PS_STEP_COUNT
} ps_step_t;

typedef enum {
    PS_STEP_AGREE,         /* ps_boot_agree: every rank's result; one failure fails all */
    PS_STEP_EXCHANGE_ALL,  /* ps_boot_exchange: an all-gather of every rank's record */
    PS_STEP_BCAST_SERVER0, /* ps_boot_bcast from server rank 0 */
    PS_STEP_BCAST_WORKER0, /* ps_boot_bcast from worker rank 0 */
} ps_step_kind_t;

typedef struct {
    const char *name; /* short, for messages: "flags", "register", ... */
    ps_step_kind_t kind;
    const char *what; /* one line: what the step settles */
} ps_step_info_t;

/* The table entry of step s; NULL outside 0 .. PS_STEP_COUNT-1. */
const ps_step_info_t *ps_step_info(int s);
/* The step's name, or "?" outside the table. */
const char *ps_step_name(int s);

#endif
