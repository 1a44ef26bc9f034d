#include "srv_save.h"

#include "ps_err.h"
#include "ps_safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Pack this server's chunks (weights or buffers) in ascending chunk id. */
static void pack_local(const srv_store_t *s, int want_buf, float *out)
{
    size_t off = 0;
    for (size_t i = 0; i < s->nlocal; i++) {
        const srv_chunk_t *c = &s->chunks[i];
        const float *src = want_buf ? c->buf : c->w;
        if (src) {
            memcpy(out + off, src, c->count * sizeof(float));
        } else {
            memset(out + off, 0, c->count * sizeof(float));
        }
        off += c->count;
    }
}

/* Server 0: scatter the gathered, server-major data into flat order. */
static void unpack_all(const ps_chunkmap_t *map, const float *gathered, float *flat)
{
    size_t off = 0;
    for (int srv = 0; srv < map->nservers; srv++) {
        for (size_t i = (size_t)srv; i < map->n; i += (size_t)map->nservers) {
            memcpy(flat + map->c[i].offset, gathered + off, map->c[i].count * sizeof(float));
            off += map->c[i].count;
        }
    }
}

static int gather_flat(ps_boot_t *b, const srv_store_t *s, int want_buf, float *flat)
{
    size_t mine = 0, *counts = calloc((size_t)b->nservers, sizeof *counts);
    float *local = NULL, *all = NULL;
    int rv = PS_ENOMEM;
    ps_chunkmap_count_on(&s->map, b->rank, &mine);
    for (int i = 0; i < b->nservers; i++) {
        if (counts) {
            ps_chunkmap_count_on(&s->map, i, &counts[i]);
        }
    }
    local = malloc((mine ? mine : 1) * sizeof(float));
    all = b->rank == 0 ? malloc(s->map.total * sizeof(float)) : NULL;
    if (counts && local && (b->rank != 0 || all)) {
        pack_local(s, want_buf, local);
        rv = ps_boot_servers_gather(b, local, mine, all, counts);
        if (rv == 0 && b->rank == 0 && flat) {
            unpack_all(&s->map, all, flat);
        }
    }
    free(counts);
    free(local);
    free(all);
    return rv;
}

static int write_file(const srv_store_t *s, const float *w, const float *buf,
                      const srv_save_info_t *info, const char *path)
{
    const ps_layout_t *l = s->layout;
    ps_st_tensor_t t[2 * PS_MAX_TENSORS];
    char names[PS_MAX_TENSORS][PS_MAX_NAME + 20];
    int n = 0;
    for (int i = 0; i < l->n; i++) {
        t[n++] = (ps_st_tensor_t){l->t[i].name, l->t[i].ndim, l->t[i].dims, w + l->t[i].offset};
    }
    for (int i = 0; buf && i < l->n; i++) {
        snprintf(names[i], sizeof names[i], "%s.momentum_buffer", l->t[i].name);
        t[n++] = (ps_st_tensor_t){names[i], l->t[i].ndim, l->t[i].dims, buf + l->t[i].offset};
    }
    char v[9][64];
    snprintf(v[0], sizeof v[0], "%llu", (unsigned long long)info->step);
    snprintf(v[1], sizeof v[1], "%.17g", s->opt.lr);
    snprintf(v[2], sizeof v[2], "%.17g", s->opt.momentum);
    snprintf(v[3], sizeof v[3], "%.17g", s->opt.dampening);
    snprintf(v[4], sizeof v[4], "%s", s->opt.nesterov ? "true" : "false");
    snprintf(v[5], sizeof v[5], "%.17g", s->opt.weight_decay);
    snprintf(v[6], sizeof v[6], "%s", s->opt.maximize ? "true" : "false");
    snprintf(v[7], sizeof v[7], "%.17g", s->opt.clip_value);
    snprintf(v[8], sizeof v[8], "%.17g", s->opt.decoupled_wd);
    const char *meta[] = {"format",
                          "ps-momentum-sgd",
                          "optimizer",
                          "torch.optim.SGD",
                          "step",
                          v[0],
                          "lr",
                          v[1],
                          "momentum",
                          v[2],
                          "dampening",
                          v[3],
                          "nesterov",
                          v[4],
                          "weight_decay",
                          v[5],
                          "maximize",
                          v[6],
                          "clip_grad_value",
                          v[7],
                          "decoupled_weight_decay",
                          v[8],
                          "momentum_form",
                          info->form,
                          "lr_schedule",
                          info->schedule,
                          "mode",
                          info->mode};
    return ps_st_write(path, t, n, meta, (int)(sizeof meta / sizeof meta[0] / 2));
}

int srv_save_model(ps_boot_t *b, const srv_store_t *s, const srv_save_info_t *info,
                   const char *path)
{
    int with_buf = s->opt.momentum != 0 && info->step > 0;
    float *w = NULL, *buf = NULL;
    int rv = 0;
    if (b->rank == 0) {
        w = malloc(s->map.total * sizeof(float));
        buf = with_buf ? malloc(s->map.total * sizeof(float)) : NULL;
        if (!w || (with_buf && !buf)) {
            rv = PS_ENOMEM;
        }
    }
    /* Every server takes part in both gathers whatever happened at root. */
    int rv1 = gather_flat(b, s, 0, w ? w : NULL);
    int rv2 = with_buf ? gather_flat(b, s, 1, buf) : 0;
    if (rv == 0) {
        rv = rv1 ? rv1 : rv2;
    }
    if (rv == 0 && b->rank == 0) {
        rv = write_file(s, w, buf, info, path);
    }
    free(w);
    free(buf);
    return rv;
}
