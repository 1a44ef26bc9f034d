#include "ps_sched.h"

#include "ps_err.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* Longer than any valid spec (16 ten-digit milestones, a gamma, a warm-up). */
#define SPEC_MAX 400

/* Digits only (no sign, no spaces) in [p, end), at most `max`. */
static int parse_uint(const char *p, const char *end, uint64_t max, uint64_t *out)
{
    if (p == end) {
        return -1;
    }
    uint64_t v = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (max - d) / 10) {
            return -1; /* would pass max */
        }
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* "M1,M2,..." in [p, end) into t's milestones. */
static int parse_milestones(ps_sched_t *t, const char *spec, const char *p, const char *end)
{
    if (p == end) {
        ps_error_set("lr schedule \"%s\": step needs milestones, e.g. step:30,60:0.1", spec);
        return PS_EINVAL;
    }
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma != NULL ? comma : end;
        uint64_t m;
        if (parse_uint(p, stop, UINT32_MAX, &m) != 0) {
            ps_error_set("lr schedule \"%s\": milestone \"%.*s\" is not an epoch number "
                         "(0..%u)",
                         spec, (int)(stop - p), p, (unsigned)UINT32_MAX);
            return PS_EINVAL;
        }
        if (t->nmilestones == PS_SCHED_MAX_MILESTONES) {
            ps_error_set("lr schedule \"%s\": more than %d milestones", spec,
                         PS_SCHED_MAX_MILESTONES);
            return PS_EINVAL;
        }
        if (t->nmilestones > 0 && m <= t->milestones[t->nmilestones - 1]) {
            ps_error_set("lr schedule \"%s\": milestones must be strictly increasing "
                         "(%llu after %u)",
                         spec, (unsigned long long)m, (unsigned)t->milestones[t->nmilestones - 1]);
            return PS_EINVAL;
        }
        t->milestones[t->nmilestones++] = (uint32_t)m;
        if (comma == NULL) {
            return 0;
        }
        p = comma + 1;
    }
}

/* GAMMA in [p, end): a plain decimal number, finite and > 0. */
static int parse_gamma(ps_sched_t *t, const char *spec, const char *p, const char *end)
{
    char tmp[64];
    size_t len = (size_t)(end - p);
    char *stop = NULL;
    double g = 0.0;
    /* strtod alone would skip spaces and accept "nan" or hex; ask for a digit. */
    int plain = len > 0 && len < sizeof tmp && ((*p >= '0' && *p <= '9') || *p == '.');
    if (plain) {
        memcpy(tmp, p, len);
        tmp[len] = '\0';
        g = strtod(tmp, &stop);
    }
    if (!plain || *stop != '\0' || !isfinite(g) || g <= 0.0) {
        ps_error_set("lr schedule \"%s\": gamma \"%.*s\" is not a finite number > 0", spec,
                     (int)len, p);
        return PS_EINVAL;
    }
    t->gamma = g;
    return 0;
}

/* "step:M1,...[:GAMMA]" with `body` just after "step:". */
static int parse_step(ps_sched_t *t, const char *spec, const char *body, const char *end)
{
    const char *colon = memchr(body, ':', (size_t)(end - body));
    int rv = parse_milestones(t, spec, body, colon != NULL ? colon : end);
    if (rv != 0) {
        return rv;
    }
    t->gamma = 0.1;
    if (colon == NULL) {
        return 0;
    }
    if (memchr(colon + 1, ':', (size_t)(end - colon - 1)) != NULL) {
        ps_error_set("lr schedule \"%s\": unexpected text after the gamma", spec);
        return PS_EINVAL;
    }
    return parse_gamma(t, spec, colon + 1, end);
}

/* The kind and its arguments, from [spec, end). */
static int parse_kind(ps_sched_t *t, const char *spec, const char *end)
{
    size_t len = (size_t)(end - spec);
    if (len == 8 && memcmp(spec, "constant", 8) == 0) {
        t->kind = PS_SCHED_CONSTANT;
        return 0;
    }
    if (len == 6 && memcmp(spec, "cosine", 6) == 0) {
        t->kind = PS_SCHED_COSINE;
        return 0;
    }
    if (len >= 5 && memcmp(spec, "step:", 5) == 0) {
        t->kind = PS_SCHED_STEP;
        return parse_step(t, spec, spec + 5, end);
    }
    ps_error_set("lr schedule \"%s\": unknown kind \"%.*s\" (want constant, cosine or "
                 "step:M1,M2,...:GAMMA)",
                 spec, (int)len, spec);
    return PS_EINVAL;
}

/* The ";warmup=N" suffix at `p` (just after the ';'). */
static int parse_warmup(const char *spec, const char *p, uint64_t *out)
{
    const char *end = p + strlen(p);
    if (strncmp(p, "warmup=", 7) != 0 || parse_uint(p + 7, end, INT64_MAX, out) != 0) {
        ps_error_set("lr schedule \"%s\": \"%s\" is not warmup=STEPS", spec, p);
        return PS_EINVAL;
    }
    return 0;
}

int ps_sched_parse(ps_sched_t *s, const char *spec, long long warmup_steps)
{
    if (spec == NULL || spec[0] == '\0') {
        ps_error_set("lr schedule: empty (want constant, cosine or step:M1,M2,...:GAMMA)");
        return PS_EINVAL;
    }
    if (strnlen(spec, SPEC_MAX + 1) > SPEC_MAX) {
        ps_error_set("lr schedule: longer than %d characters", SPEC_MAX);
        return PS_EINVAL;
    }
    if (warmup_steps < 0) {
        ps_error_set("warm-up steps %lld is negative", warmup_steps);
        return PS_EINVAL;
    }
    ps_sched_t t;
    memset(&t, 0, sizeof t); /* zero padding too: the struct is sent as bytes */
    const char *semi = strchr(spec, ';');
    int rv = parse_kind(&t, spec, semi != NULL ? semi : spec + strlen(spec));
    uint64_t w = 0;
    if (rv == 0 && semi != NULL) {
        rv = parse_warmup(spec, semi + 1, &w);
    }
    if (rv != 0) {
        return rv;
    }
    if (semi != NULL && warmup_steps != 0 && (uint64_t)warmup_steps != w) {
        ps_error_set("lr schedule \"%s\": warm-up given twice (%llu in the schedule, %lld "
                     "from its flag)",
                     spec, (unsigned long long)w, warmup_steps);
        return PS_EINVAL;
    }
    t.warmup_steps = semi != NULL ? w : (uint64_t)warmup_steps;
    *s = t;
    return 0;
}

/* Number of milestones reached by `epoch` (milestones are increasing). */
static int milestones_passed(const ps_sched_t *s, uint64_t epoch)
{
    int k = 0;
    while (k < s->nmilestones && epoch >= s->milestones[k]) {
        k++;
    }
    return k;
}

double ps_sched_lr(const ps_sched_t *s, double base_lr, uint64_t t, uint64_t steps_per_epoch,
                   uint64_t total_steps)
{
    double lr = base_lr;
    if (s->kind == PS_SCHED_STEP) {
        uint64_t epoch = t / (steps_per_epoch != 0 ? steps_per_epoch : 1);
        lr = base_lr * pow(s->gamma, (double)milestones_passed(s, epoch));
    } else if (s->kind == PS_SCHED_COSINE && total_steps != 0) {
        /* Grouped as torch's closed form: pi * t / T, then (base * (1 + c)) / 2. */
        double c = cos(M_PI * (double)t / (double)total_steps);
        lr = base_lr * (1.0 + c) / 2.0;
    }
    if (t < s->warmup_steps) {
        lr = lr * ((double)(t + 1) / (double)s->warmup_steps);
    }
    return lr;
}

/* Shortest "%.*g" text of v that strtod reads back as v. */
static void shortest_g(double v, char *out, size_t cap)
{
    for (int p = 1; p <= 17; p++) {
        snprintf(out, cap, "%.*g", p, v);
        if (strtod(out, NULL) == v) {
            return;
        }
    }
}

void ps_sched_describe(const ps_sched_t *s, char *buf, size_t cap)
{
    char txt[SPEC_MAX + 64];
    size_t len;
    if (s->kind == PS_SCHED_STEP) {
        len = (size_t)snprintf(txt, sizeof txt, "step:");
        for (int i = 0; i < s->nmilestones && i < PS_SCHED_MAX_MILESTONES; i++) {
            len += (size_t)snprintf(txt + len, sizeof txt - len, "%s%u", i > 0 ? "," : "",
                                    (unsigned)s->milestones[i]);
        }
        char g[32];
        shortest_g(s->gamma, g, sizeof g);
        len += (size_t)snprintf(txt + len, sizeof txt - len, ":%s", g);
    } else {
        len = (size_t)snprintf(txt, sizeof txt, "%s",
                               s->kind == PS_SCHED_COSINE ? "cosine" : "constant");
    }
    if (s->warmup_steps > 0) {
        snprintf(txt + len, sizeof txt - len, ";warmup=%llu", (unsigned long long)s->warmup_steps);
    }
    if (cap > 0) {
        snprintf(buf, cap, "%s", txt);
    }
}
