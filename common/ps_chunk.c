#include "ps_chunk.h"

#include "ps_err.h"

#include <stdlib.h>
#include <string.h>

size_t ps_chunk_auto(size_t total, int nservers)
{
    size_t per = (total + (size_t)nservers - 1) / (size_t)nservers;
    per = (per + PS_CHUNK_MIN_ELEMS - 1) / PS_CHUNK_MIN_ELEMS * PS_CHUNK_MIN_ELEMS;
    if (per < PS_CHUNK_AUTO_MIN) {
        per = PS_CHUNK_AUTO_MIN;
    }
    return per > PS_CHUNK_AUTO_MAX ? PS_CHUNK_AUTO_MAX : per;
}

int ps_chunkmap_init(ps_chunkmap_t *m, size_t total, size_t chunk_elems, int nservers)
{
    memset(m, 0, sizeof *m);
    if (total == 0 || nservers < 1) {
        ps_error_set("chunk map needs elements and servers (%zu, %d)", total, nservers);
        return PS_EINVAL;
    }
    if (chunk_elems == 0) {
        chunk_elems = ps_chunk_auto(total, nservers);
    }
    if (chunk_elems < PS_CHUNK_MIN_ELEMS || chunk_elems > PS_CHUNK_MAX_ELEMS) {
        ps_error_set("chunk size %zu elements outside [%d, %u]", chunk_elems, PS_CHUNK_MIN_ELEMS,
                     PS_CHUNK_MAX_ELEMS);
        return PS_EINVAL;
    }
    size_t n = (total + chunk_elems - 1) / chunk_elems;
    if (n > UINT32_MAX) {
        ps_error_set("too many chunks (%zu)", n);
        return PS_EINVAL;
    }
    m->c = calloc(n, sizeof *m->c);
    if (!m->c) {
        ps_error_set("no memory for the map of %zu chunks", n);
        return PS_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        m->c[i].id = (uint32_t)i;
        m->c[i].server = (int)(i % (size_t)nservers);
        m->c[i].offset = i * chunk_elems;
        m->c[i].count = (i + 1 < n) ? chunk_elems : total - i * chunk_elems;
    }
    m->total = total;
    m->chunk_elems = chunk_elems;
    m->nservers = nservers;
    m->n = n;
    return 0;
}

void ps_chunkmap_fini(ps_chunkmap_t *m)
{
    free(m->c);
    memset(m, 0, sizeof *m);
}

size_t ps_chunkmap_count_on(const ps_chunkmap_t *m, int s, size_t *elems)
{
    size_t k = 0, e = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (m->c[i].server == s) {
            k++;
            e += m->c[i].count;
        }
    }
    if (elems) {
        *elems = e;
    }
    return k;
}
