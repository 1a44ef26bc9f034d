#include "srv_save.h"

#include "ps_err.h"
#include "ps_safetensors.h"

#include <jansson.h>
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

char *srv_save_tensor_opts(const ps_layout_t *l)
{
    json_t *root = json_object();
    for (int i = 0; root && i < l->n; i++) {
        const ps_tensor_t *t = &l->t[i];
        if (!t->opts) {
            continue;
        }
        json_t *o = json_object();
        if (!o || json_object_set_new(root, t->name, o) != 0) {
            json_decref(root);
            return NULL;
        }
        if (t->opts & PS_TOPT_WD) {
            json_object_set_new(o, "weight_decay", json_real(t->weight_decay));
        }
        if (t->opts & PS_TOPT_LR) {
            json_object_set_new(o, "lr_scale", json_real(t->lr_scale));
        }
    }
    /* Layout order, no spaces; reals as the shortest text that reads back. */
    char *out = root
                    ? json_dumps(root, JSON_PRESERVE_ORDER | JSON_COMPACT | JSON_REAL_PRECISION(17))
                    : NULL;
    json_decref(root);
    return out;
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
                          info->mode,
                          "tensor_options",
                          NULL};
    int nmeta = (int)(sizeof meta / sizeof meta[0] / 2);
    char *topts = NULL;
    if (!s->tensor_opts) {
        nmeta--; /* the file of a model without tensor options is unchanged */
    } else if (!(meta[2 * nmeta - 1] = topts = srv_save_tensor_opts(l))) {
        ps_error_set("no memory for the tensor options' metadata");
        return PS_ENOMEM;
    }
    int rv = ps_st_write(path, t, n, meta, nmeta);
    free(topts);
    return rv;
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
