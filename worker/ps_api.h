/*
 * ps_api: the inside of libpsclient (ps.h); not installed, not for programs
 * (ps-worker included: it uses ps.h alone).
 *
 * The public start-up calls are compositions of these steps:
 *
 *     ps_init  = ps_api_boot_new + (servers present?) + ps_api_join
 *     ps_start = ps_api_start_plan + ps_api_start_register + initial pull
 *
 * and ps_finalize runs whichever of them a worker that leaves early has
 * not run yet, so the servers' sequence always completes.  Each step is
 * collective exactly as docs/protocol.md's start-up table says.  After a
 * failed agreement the handle is "left": only ps_finalize (no more
 * collective steps) is valid.
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
/* Steps 2-4: agree on `local_rc` (the caller's checks) and on the
 * options, exchange endpoints and keys, receive the servers' settings. */
int ps_api_join(ps_t *ps, int local_rc);
/* Remember a failure whose detail is already in ps_error_msg(). */
void ps_api_fail(ps_t *ps, int rc);

/* Steps 5-7: agree on the declarations (and remembered failures), compare
 * model and plan across the workers, broadcast the plan, the servers'
 * --resume agreement. */
int ps_api_start_plan(ps_t *ps);
/* Step 8: connect, register the model (worker 0), agree (with any
 * failure remembered since), receive the step the servers start from. */
int ps_api_start_register(ps_t *ps);

/* ps_init's reading of the caller's options: the first in->struct_size
 * bytes (in NULL: all defaults), checked, defaults filled in, into *out
 * (always fully set).  PS_EINVAL with a detail for a struct_size below
 * sizeof(size_t), a field set that this version does not know, or a bad
 * value. */
int ps_api_options(const ps_options_t *in, ps_options_t *out);

#endif
