/*
 * ps_api: the inside of libpsclient (ps.h), for ps-worker's main.
 *
 * ps.h is the contract with users; this header adds what the built-in
 * worker needs to run the very same start-up sequence with its own model,
 * flags and messages, so the sequence exists once.  The public calls are
 * compositions of these:
 *
 *     ps_init  = ps_api_boot_new + (servers present?) + ps_api_join
 *     ps_start = ps_api_start_plan + ps_api_start_register + initial pull
 *
 * Each step is collective exactly as docs/protocol.md's start-up table
 * says.  After a failed agreement the handle is "left": only ps_finalize
 * (no more collective steps) is valid.  Not installed; not for users.
 */
#ifndef PS_API_H
#define PS_API_H

#include "ps_err.h"
#include "ps.h"
#include "ps_boot.h"
#include "ps_jobinfo.h"
#include "ps_layout.h"
#include "wkr_client.h"

/* Step 1: MPI (unless the caller initialised it), the role split, log
 * name and level.  No agreement yet: the caller checks its flags next.
 * *out is NULL on failure (nothing collective happened). */
int ps_api_boot_new(ps_t **out, int *argc, char ***argv, const ps_options_t *opt);
/* Steps 2-4: agree on `local_rc` (the caller's flag checks), exchange
 * endpoints and keys, receive the servers' settings. */
int ps_api_join(ps_t *ps, int local_rc);

ps_boot_t *ps_api_boot(ps_t *ps);
const ps_srvinfo_t *ps_api_srvinfo(const ps_t *ps);
wkr_client_t *ps_api_client(ps_t *ps);

/* Use the caller's flat arrays (layout order, layout->total floats each,
 * owned by the caller and alive until ps_finalize) instead of declared
 * tensors; params holds the initial values. */
int ps_api_adopt(ps_t *ps, const ps_layout_t *layout, float *params, float *grads);
/* Also compare these values across the workers, and say `msg` (copied)
 * when they or the model differ. */
int ps_api_agreement(ps_t *ps, const uint64_t *extra, int n, const char *msg);
/* Remember a failure whose detail is already in ps_error_msg(). */
void ps_api_fail(ps_t *ps, int rc);

/* Steps 5-7: agree on the declarations (and remembered failures), compare
 * model and plan across the workers, broadcast the plan, the servers'
 * --resume agreement. */
int ps_api_start_plan(ps_t *ps);
/* Step 8: connect, register the model (worker 0), agree (with any
 * failure remembered since), receive the step the servers start from. */
int ps_api_start_register(ps_t *ps);
/* The caller's trainer sent SHUTDOWN itself (wkr_train_run does). */
void ps_api_shutdown_sent(ps_t *ps);

#endif
