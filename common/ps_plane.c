#include "ps_plane.h"

#include "ps_err.h"

#include <stdio.h>
#include <string.h>

static const char *const NAMES[] = {"auto", "ipc", "tcp", "shm"};

int ps_plane_parse(const char *s, const char *flag, ps_plane_t *out)
{
    for (int p = PS_PLANE_AUTO; p <= PS_PLANE_SHM; p++) {
        if (s && strcmp(s, NAMES[p]) == 0) {
            *out = (ps_plane_t)p;
            return 0;
        }
    }
    ps_error_set("%s '%s': want auto, shm, ipc or tcp", flag, s ? s : "(null)");
    return PS_EINVAL;
}

const char *ps_plane_name(ps_plane_t p)
{
    return p >= PS_PLANE_AUTO && p <= PS_PLANE_SHM ? NAMES[p] : "?";
}

/* shm and ipc reach only ranks on one host. */
static int local_only(ps_plane_t p)
{
    return p == PS_PLANE_IPC || p == PS_PLANE_SHM;
}

/* One host, two explicit wishes that cannot both hold: tcp against shm or
 * ipc, or ipc against shm. */
static int clash(ps_plane_t a, ps_plane_t b)
{
    return a != PS_PLANE_AUTO && b != PS_PLANE_AUTO && a != b;
}

int ps_plane_decide(const ps_plane_pair_t *p, ps_plane_t *out)
{
    int same = strcmp(p->server_host, p->worker_host) == 0;
    if (!same && (local_only(p->srv) || local_only(p->wkr))) {
        ps_error_set(
            "%s %d says --transport %s, but server %d runs on %s and worker %d on "
            "%s: %s reaches only ranks on one host (use auto)",
            local_only(p->srv) ? "server" : "worker", local_only(p->srv) ? p->server : p->worker,
            ps_plane_name(local_only(p->srv) ? p->srv : p->wkr), p->server, p->server_host,
            p->worker, p->worker_host, ps_plane_name(local_only(p->srv) ? p->srv : p->wkr));
        return PS_EINVAL;
    }
    if (same && clash(p->srv, p->wkr)) {
        ps_error_set("server %d says --transport %s and worker %d says --transport %s (both on "
                     "%s): give them the same, or auto to one of them",
                     p->server, ps_plane_name(p->srv), p->worker, ps_plane_name(p->wkr),
                     p->server_host);
        return PS_EINVAL;
    }
    if (!same || p->srv == PS_PLANE_TCP || p->wkr == PS_PLANE_TCP) {
        *out = PS_PLANE_TCP;
    } else if (p->srv == PS_PLANE_IPC || p->wkr == PS_PLANE_IPC) {
        *out = PS_PLANE_IPC;
    } else {
        *out = PS_PLANE_SHM;
    }
    return 0;
}

/* Appends "[, ]WHAT to N local[ and M remote] worker(s)" when any. */
static void part(char *out, size_t cap, const char *what, int local, int remote)
{
    size_t used = strlen(out);
    int n = local + remote;
    if (n == 0 || used >= cap) {
        return;
    }
    char who[64];
    if (local && remote) {
        snprintf(who, sizeof who, "%d local and %d remote", local, remote);
    } else {
        snprintf(who, sizeof who, "%d %s", n, local ? "local" : "remote");
    }
    snprintf(out + used, cap - used, "%s%s to %s worker%s", used ? ", " : "", what, who,
             n == 1 ? "" : "s");
}

void ps_plane_describe(const ps_plane_count_t *c, int secure, char *out, size_t cap)
{
    if (cap == 0) {
        return;
    }
    out[0] = '\0';
    part(out, cap, secure ? "shm + ipc (peer credentials)" : "shm + ipc (no authentication)",
         c->shm, 0);
    part(out, cap, secure ? "ipc (peer credentials)" : "ipc (no authentication)", c->ipc, 0);
    part(out, cap, secure ? "tcp+CurveZMQ" : "tcp (no authentication)", c->tcp_local,
         c->tcp_remote);
    if (out[0] == '\0') {
        snprintf(out, cap, "no workers");
    }
}
