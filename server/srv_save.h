/*
 * srv_save: the final model as one safetensors file.
 *
 * Collective over the server ranks: every server packs the weights (and the
 * momentum velocity, when there is one) of its chunks; server 0 gathers
 * them over MPI, reassembles the flat parameter space from the chunk map
 * and writes `<name>` tensors in layout order, then `<name>.momentum_buffer`
 * for each tensor when momentum > 0 and at least one update was applied,
 * with the step count and optimizer settings in __metadata__.  The file is
 * written atomically (ps_st_write).  The result is agreed on: every server
 * returns the same code.
 */
#ifndef SRV_SAVE_H
#define SRV_SAVE_H

#include "ps_boot.h"
#include "srv_store.h"

int srv_save_model(ps_boot_t *b, const srv_store_t *s, uint64_t step, const char *path);

#endif
