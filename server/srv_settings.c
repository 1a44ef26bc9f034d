#include "srv_settings.h"

#include "ps_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KEYS 64

typedef struct {
    const char *key, *val;
    int klen, vlen;
} kv_t;

/* "k=v;k=v": pointers into s (not copied). */
static int parse(const char *s, kv_t *kv)
{
    int n = 0;
    while (s && *s && n < MAX_KEYS) {
        const char *end = strchr(s, ';');
        end = end ? end : s + strlen(s);
        const char *eq = memchr(s, '=', (size_t)(end - s));
        kv[n].key = s;
        kv[n].klen = (int)((eq ? eq : end) - s);
        kv[n].val = eq ? eq + 1 : end;
        kv[n].vlen = (int)(end - kv[n].val);
        n++;
        s = *end ? end + 1 : end;
    }
    return n;
}

static const kv_t *find(const kv_t *kv, int n, const kv_t *like)
{
    for (int i = 0; i < n; i++) {
        if (kv[i].klen == like->klen && memcmp(kv[i].key, like->key, (size_t)like->klen) == 0) {
            return &kv[i];
        }
    }
    return NULL;
}

static int same_value(const kv_t *a, const kv_t *b)
{
    return a && b && a->vlen == b->vlen && memcmp(a->val, b->val, (size_t)a->vlen) == 0;
}

static int is_key(const kv_t *kv, const char *key)
{
    return kv->klen == (int)strlen(key) && memcmp(kv->key, key, (size_t)kv->klen) == 0;
}

typedef struct {
    char *buf;
    size_t cap, used;
    int n;
} out_t;

/* Append one difference; a message that does not fit ends in "...". */
static void note(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(out_t *o, const char *fmt, ...)
{
    if (o->cap == 0 || o->used + 1 >= o->cap) {
        return;
    }
    int k = snprintf(o->buf + o->used, o->cap - o->used, "%s", o->n++ ? "; " : "");
    o->used += (size_t)k;
    va_list ap;
    va_start(ap, fmt);
    k = o->used < o->cap ? vsnprintf(o->buf + o->used, o->cap - o->used, fmt, ap) : 0;
    va_end(ap);
    o->used += (size_t)k;
    if (o->used >= o->cap && o->cap > 4) {
        memcpy(o->buf + o->cap - 4, "...", 4);
        o->used = o->cap - 1;
    }
}

/* total_steps differs: fine when the schedule does not read it. */
static void total_steps(out_t *o, const kv_t *had, const kv_t *now, const kv_t *sched,
                        uint64_t step)
{
    int free_len = sched && ((sched->vlen == 8 && memcmp(sched->val, "constant", 8) == 0) ||
                             (sched->vlen > 5 && memcmp(sched->val, "step:", 5) == 0));
    unsigned long long total = now ? strtoull(now->val, NULL, 10) : 0;
    if (!now || !had || !free_len) {
        note(o,
             "total_steps (checkpoint %.*s, this run %.*s: the %.*s schedule depends on "
             "the run's length, so a run of another length is another trajectory)",
             had ? had->vlen : 6, had ? had->val : "absent", now ? now->vlen : 6,
             now ? now->val : "absent", sched ? sched->vlen : 1, sched ? sched->val : "?");
    } else if (step > total) {
        note(o, "total_steps (this run's %llu is before the checkpoint's step %llu)", total,
             (unsigned long long)step);
    }
}

int srv_settings_check_resume(const char *had, const char *now, uint64_t step, char *why,
                              size_t cap)
{
    kv_t h[MAX_KEYS], w[MAX_KEYS];
    int nh = parse(had, h), nw = parse(now, w);
    out_t o = {why, cap, 0, 0};
    kv_t sched = {"schedule", NULL, 8, 0};
    if (cap > 0) {
        why[0] = '\0';
    }
    for (int i = 0; i < nh + nw; i++) {
        const kv_t *k = i < nh ? &h[i] : &w[i - nh];
        const kv_t *a = find(h, nh, k), *b = find(w, nw, k);
        if (i >= nh && a) {
            continue; /* compared already, from the checkpoint's side */
        }
        if (same_value(a, b)) {
            continue;
        }
        if (is_key(k, "total_steps")) {
            total_steps(&o, a, b, find(w, nw, &sched), step);
        } else {
            note(&o, "%.*s (checkpoint %.*s, this run %.*s)", k->klen, k->key, a ? a->vlen : 6,
                 a ? a->val : "absent", b ? b->vlen : 6, b ? b->val : "absent");
        }
    }
    return o.n ? PS_EINVAL : 0;
}
