/*
 * srv_settings: may a run resume a checkpoint taken with these settings?
 *
 * A checkpoint records the run's settings as "key=value;key=value;..."
 * (describe_settings in server/srv_main.c: optimizer, form, schedule,
 * mode, steps per epoch, total steps); a ';' inside a value (the
 * schedule's ";warmup=N") reads as a key of its own, which compares the
 * same way.  Resuming needs every key equal, with one exception: a run
 * whose learning-rate schedule does not depend on its length (constant,
 * step: milestones in epochs) may change total_steps, to extend a run with
 * more epochs (or end it sooner), as long as the checkpoint's step is not
 * beyond the new total.  cosine anneals over total_steps, so there a new
 * length is another trajectory and is refused, saying so.
 *
 * Plain C, no I/O: unit tests drive it directly.
 */
#ifndef SRV_SETTINGS_H
#define SRV_SETTINGS_H

#include <stddef.h>
#include <stdint.h>

/* 0 when a checkpoint of step `step` taken with settings `had` may be
 * resumed by a run with settings `now`; otherwise PS_EINVAL, and `why`
 * (cap bytes, NUL-terminated, cut with "..." if it does not fit) names
 * every key that differs with both values, and why total_steps may not
 * change when that is the reason. */
int srv_settings_check_resume(const char *had, const char *now, uint64_t step, char *why,
                              size_t cap);

#endif
