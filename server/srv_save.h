/*
 * srv_save: the final model as one safetensors file.
 *
 * Collective over the server ranks: every server packs the weights (and the
 * momentum velocity, when there is one) of its chunks; server 0 gathers
 * them over MPI, reassembles the flat parameter space from the chunk map
 * and writes `<name>` tensors in layout order, then `<name>.momentum_buffer`
 * for each tensor when momentum > 0 and at least one update was applied,
 * with the step count, optimizer settings, momentum form, learning-rate
 * schedule and mode in __metadata__ (a resumed run continues from them),
 * and, when some tensor has its own weight decay or learning-rate scale,
 * "tensor_options": srv_save_tensor_opts' JSON.  The file is
 * written atomically (ps_st_write).  The result is agreed on: every server
 * returns the same code.
 */
#ifndef SRV_SAVE_H
#define SRV_SAVE_H

#include "ps_boot.h"
#include "srv_store.h"

/* What the metadata records beyond the optimizer settings in the store. */
typedef struct {
    uint64_t step;        /* updates applied (async: pushes applied) */
    const char *mode;     /* "sync" | "ssp" | "async" */
    const char *schedule; /* ps_sched_describe text */
    const char *form;     /* momentum form name */
} srv_save_info_t;

/* The tensors with options as one compact JSON object in layout order,
 * {"fc1.bias":{"weight_decay":0.0},"fc2.weight":{"lr_scale":0.5}} (only
 * the options a tensor has); malloc'd, NULL when out of memory. */
char *srv_save_tensor_opts(const ps_layout_t *l);

int srv_save_model(ps_boot_t *b, const srv_store_t *s, const srv_save_info_t *info,
                   const char *path);

#endif
