/*
 * ps_jobinfo: what the two roles tell each other at start-up, over MPI.
 *
 * Server rank 0 broadcasts the server settings every worker must follow
 * (chunk size, consistency mode, learning-rate schedule); worker rank 0
 * broadcasts the training plan the schedule is evaluated against.  Both are
 * sent as bytes between processes built from the same source.
 */
#ifndef PS_JOBINFO_H
#define PS_JOBINFO_H

#include "ps_sched.h"

#include <stdint.h>

typedef enum { PS_MODE_SYNC = 0, PS_MODE_SSP = 1, PS_MODE_ASYNC = 2 } ps_mode_t;
/* The modes' flag names ("sync", "ssp", "async"), by ps_mode_t. */
extern const char *const ps_mode_names[3];
/* ps_mode_names[mode], or "?" for a value out of range (it came over MPI). */
const char *ps_mode_name(uint32_t mode);

typedef struct {
    uint64_t chunk_kib;
    uint32_t mode;      /* ps_mode_t */
    uint64_t staleness; /* ssp bound */
    double lr;          /* base learning rate */
    ps_sched_t sched;
    uint32_t nonfinite_skip; /* --on-nonfinite skip */
} ps_srvinfo_t;

typedef struct {
    uint64_t steps_per_epoch;
    uint64_t total_steps;
} ps_planinfo_t;

#endif
