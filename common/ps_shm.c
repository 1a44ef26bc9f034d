#include "ps_shm.h"

#include "ps_cleanup.h"
#include "ps_err.h"
#include "ps_janitor.h"
#include "ps_signal.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define SHM_MAGIC 0x48535350u /* "PSSH" */
#define SHM_VERSION 1u
#define PAGE 4096u
#define LINE 64u
#define HDR_FIXED 64u /* then u64 area_off[nworkers] */

struct ps_shm {
    char path[PS_SHM_PATH];
    int owner;     /* the server: unlinks, the janitor is its */
    int linked;    /* the name still exists */
    uint8_t *base; /* the mapping; NULL when empty */
    size_t bytes;
    int nslots, nworkers;
    size_t nlocal, elems;
    size_t *loff; /* [map n] chunk id -> offset among the server's floats; SIZE_MAX: not ours */
    size_t *lidx; /* [map n] chunk id -> index among the server's chunks */
    size_t nchunks;
    ps_janitor_t janitor;
};

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

/* The janitor: as ps_ipcdir's, a shell that waits for the end of a pipe
 * only this process writes, then removes the segment: a server killed
 * outright (SIGKILL) before it unlinked leaves nothing behind. */
static const char JANITOR[] = "while read -r _; do :; done; rm -f -- \"$1\"";

static ps_shm_t *shm_alloc(void)
{
    ps_shm_t *s = calloc(1, sizeof *s);
    if (s) {
        ps_janitor_init(&s->janitor);
    }
    return s;
}

static int random_name(char *path, size_t cap, const char *dir)
{
    uint8_t r[12];
    char hex[2 * sizeof r + 1];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        ps_error_set("shared memory: no random bytes for a segment name: %s", strerror(errno));
        return PS_EIO;
    }
    for (size_t i = 0; i < sizeof r; i++) {
        snprintf(hex + 2 * i, 3, "%02x", r[i]);
    }
    if ((size_t)snprintf(path, cap, "%s/ps-shm-%s", dir, hex) >= cap) {
        ps_error_set("shared memory: the folder '%s' (PS_SHM_DIR) is too long a path", dir);
        return PS_EINVAL;
    }
    return 0;
}

int ps_shm_create(ps_shm_t **out, char *path, size_t cap)
{
    const char *dir = getenv("PS_SHM_DIR");
    ps_shm_t *s = shm_alloc();
    int rv;
    *out = NULL;
    if (!s) {
        return PS_ENOMEM;
    }
    dir = dir && *dir ? dir : "/dev/shm";
    if ((rv = random_name(s->path, sizeof s->path, dir)) != 0) {
        free(s);
        return rv;
    }
    int fd = open(s->path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        ps_error_set("shared memory: cannot create a segment in %s: %s", dir, strerror(errno));
        free(s);
        return PS_EIO;
    }
    close(fd);
    s->owner = s->linked = 1;
    if ((rv = ps_cleanup_add_file(s->path)) != 0) {
        ps_shm_destroy(&s);
        return rv;
    }
    ps_janitor_start(&s->janitor, JANITOR, "ps-shm-janitor", s->path);
    snprintf(path, cap, "%s", s->path);
    *out = s;
    return 0;
}

/* Chunk id -> its place among server `server`'s chunks. */
static int geometry(ps_shm_t *s, const ps_chunkmap_t *map, int server, int nslots, int nworkers)
{
    s->loff = malloc((map->n + 1) * sizeof *s->loff);
    s->lidx = malloc((map->n + 1) * sizeof *s->lidx);
    if (!s->loff || !s->lidx) {
        ps_error_set("shared memory: no memory for the map of %zu chunks", map->n);
        return PS_ENOMEM;
    }
    s->nchunks = map->n;
    s->nslots = nslots;
    s->nworkers = nworkers;
    s->nlocal = s->elems = 0;
    for (size_t i = 0; i < map->n; i++) {
        s->loff[i] = s->lidx[i] = SIZE_MAX;
        if (map->c[i].server == server) {
            s->loff[i] = s->elems;
            s->lidx[i] = s->nlocal++;
            s->elems += map->c[i].count;
        }
    }
    return 0;
}

static size_t hdr_bytes(int nworkers)
{
    return round_up(HDR_FIXED + 8u * (size_t)nworkers, PAGE);
}

static size_t flags_bytes(const ps_shm_t *s)
{
    return round_up(s->nlocal * (size_t)s->nslots * sizeof(uint32_t), LINE);
}

static size_t area_bytes(const ps_shm_t *s)
{
    size_t slot = round_up(s->elems * sizeof(float), LINE);
    return round_up(flags_bytes(s) + (size_t)s->nslots * slot + slot, PAGE);
}

static uint64_t *area_offs(const ps_shm_t *s)
{
    return (uint64_t *)(void *)(s->base + HDR_FIXED);
}

/* Room: posix_fallocate reserves the tmpfs pages, so a full folder fails
 * here, not with SIGBUS at the first touch. */
static int reserve(ps_shm_t *s, int fd, size_t bytes)
{
    struct statvfs vfs;
    int err = 0;
    if (fstatvfs(fd, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < bytes) {
        err = ENOSPC;
    } else {
        err = posix_fallocate(fd, 0, (off_t)bytes);
    }
    if (err != 0) {
        ps_error_set("shared memory: a segment of %zu bytes (%.1f MiB) does not fit in %.*s: %s",
                     bytes, (double)bytes / 1048576.0, (int)(strrchr(s->path, '/') - s->path),
                     s->path, strerror(err));
        if (ftruncate(fd, 0) != 0) {
            /* left as it is: workers find no header and use ipc */
        }
        return PS_ENOMEM;
    }
    return 0;
}

static void write_header(ps_shm_t *s, const uint8_t *use)
{
    uint32_t *h32 = (uint32_t *)(void *)s->base;
    uint64_t *h64 = (uint64_t *)(void *)s->base;
    size_t at = hdr_bytes(s->nworkers);
    h32[1] = SHM_VERSION;
    h64[1] = s->bytes;
    h32[4] = (uint32_t)s->nworkers;
    h32[5] = (uint32_t)s->nslots;
    h64[3] = s->nlocal;
    h64[4] = s->elems;
    for (int w = 0; w < s->nworkers; w++) {
        area_offs(s)[w] = use[w] ? at : 0;
        at += use[w] ? area_bytes(s) : 0;
    }
    /* Last: a worker that sees the magic sees the rest. */
    __atomic_store_n(&h32[0], SHM_MAGIC, __ATOMIC_RELEASE);
}

int ps_shm_size(ps_shm_t *s, const ps_chunkmap_t *map, int server, int nslots, int nworkers,
                const uint8_t *use)
{
    int rv = geometry(s, map, server, nslots, nworkers), n = 0;
    if (rv != 0) {
        return rv;
    }
    for (int w = 0; w < nworkers; w++) {
        n += use[w] != 0;
    }
    size_t bytes = hdr_bytes(nworkers) + (size_t)n * area_bytes(s);
    int fd = open(s->path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        ps_error_set("shared memory: cannot open %s again: %s", s->path, strerror(errno));
        return PS_EIO;
    }
    if ((rv = reserve(s, fd, bytes)) == 0) {
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            ps_error_set("shared memory: cannot map %zu bytes of %s: %s", bytes, s->path,
                         strerror(errno));
            rv = PS_ENOMEM;
        } else {
            s->base = p;
            s->bytes = bytes;
            write_header(s, use);
        }
    }
    close(fd);
    return rv;
}

/* The file must be ours alone: our uid, no access for anyone else, a
 * regular file (O_NOFOLLOW refused a link already). */
static int check_owner(int fd, const char *path, struct stat *st)
{
    if (fstat(fd, st) != 0) {
        ps_error_set("shared memory: cannot stat %s: %s", path, strerror(errno));
        return PS_EIO;
    }
    if (!S_ISREG(st->st_mode) || st->st_uid != geteuid() || (st->st_mode & 077) != 0) {
        ps_error_set("shared memory: %s is not a private file of this user (mode %o, uid %u)", path,
                     (unsigned)(st->st_mode & 07777), (unsigned)st->st_uid);
        return PS_EPROTO;
    }
    return 0;
}

/* The header the server wrote against the geometry this worker computed. */
static int check_header(ps_shm_t *s, int worker)
{
    const uint32_t *h32 = (const uint32_t *)(const void *)s->base;
    const uint64_t *h64 = (const uint64_t *)(const void *)s->base;
    if (__atomic_load_n(&h32[0], __ATOMIC_ACQUIRE) != SHM_MAGIC) {
        ps_error_set("shared memory: %s holds no segment", s->path);
        return PS_ENOENT;
    }
    if (h32[1] != SHM_VERSION || h64[1] != s->bytes || h32[4] != (uint32_t)s->nworkers ||
        h32[5] != (uint32_t)s->nslots || h64[3] != s->nlocal || h64[4] != s->elems) {
        ps_error_set("shared memory: %s does not hold the geometry this worker expects "
                     "(%zu chunks of %zu floats, %d slots, %d workers)",
                     s->path, s->nlocal, s->elems, s->nslots, s->nworkers);
        return PS_EPROTO;
    }
    uint64_t off = area_offs(s)[worker];
    if (off == 0) {
        return PS_ENOENT;
    }
    if (off < hdr_bytes(s->nworkers) || off > s->bytes || s->bytes - off < area_bytes(s)) {
        ps_error_set("shared memory: worker %d's area in %s is out of bounds", worker, s->path);
        return PS_EPROTO;
    }
    return 0;
}

static int map_existing(ps_shm_t *s, int worker)
{
    struct stat st;
    int fd = open(s->path, O_RDWR | O_NOFOLLOW | O_CLOEXEC), rv;
    if (fd < 0) {
        ps_error_set("shared memory: cannot open %s: %s", s->path, strerror(errno));
        return errno == ENOENT ? PS_ENOENT : PS_EIO; /* gone: the server could not size it */
    }
    if ((rv = check_owner(fd, s->path, &st)) == 0 && (size_t)st.st_size < PAGE) {
        rv = PS_ENOENT; /* the server could not size it */
    }
    if (rv == 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            ps_error_set("shared memory: cannot map %s: %s", s->path, strerror(errno));
            rv = PS_EIO;
        } else {
            s->base = p;
            s->bytes = (size_t)st.st_size;
            rv = check_header(s, worker);
        }
    }
    close(fd);
    return rv;
}

int ps_shm_attach(ps_shm_t **out, const char *path, const ps_chunkmap_t *map, int server,
                  int nslots, int nworkers, int worker)
{
    ps_shm_t *s = shm_alloc();
    int rv;
    *out = NULL;
    if (!s) {
        return PS_ENOMEM;
    }
    if (snprintf(s->path, sizeof s->path, "%s", path) >= (int)sizeof s->path) {
        ps_error_set("shared memory: segment path too long");
        free(s);
        return PS_EINVAL;
    }
    if ((rv = geometry(s, map, server, nslots, nworkers)) == 0) {
        rv = map_existing(s, worker);
    }
    if (rv != 0) {
        ps_shm_destroy(&s);
        return rv;
    }
    *out = s;
    return 0;
}

void ps_shm_unlink(ps_shm_t *s)
{
    if (s && s->owner && s->linked) {
        unlink(s->path);
        ps_cleanup_forget(s->path);
        s->linked = 0;
        ps_janitor_stop(&s->janitor);
    }
}

void ps_shm_destroy(ps_shm_t **sp)
{
    ps_shm_t *s = *sp;
    if (!s) {
        return;
    }
    ps_shm_unlink(s);
    if (s->base) {
        munmap(s->base, s->bytes);
    }
    free(s->loff);
    free(s->lidx);
    free(s);
    *sp = NULL;
}

size_t ps_shm_bytes(const ps_shm_t *s)
{
    return s && s->base ? s->bytes : 0;
}

int ps_shm_has(const ps_shm_t *s, int w)
{
    return s && s->base && w >= 0 && w < s->nworkers && area_offs(s)[w] != 0;
}

int ps_shm_nslots(const ps_shm_t *s)
{
    return s ? s->nslots : 0;
}

static uint8_t *area(ps_shm_t *s, int w, uint32_t id)
{
    if (!ps_shm_has(s, w) || id >= s->nchunks || s->loff[id] == SIZE_MAX) {
        return NULL;
    }
    return s->base + area_offs(s)[w];
}

static uint32_t *flag_of(ps_shm_t *s, int w, uint32_t id, int slot)
{
    uint8_t *a = area(s, w, id);
    if (!a || slot < 0 || slot >= s->nslots) {
        return NULL;
    }
    return (uint32_t *)(void *)a + s->lidx[id] * (size_t)s->nslots + (size_t)slot;
}

void *ps_shm_push_at(ps_shm_t *s, int w, uint32_t id, int slot)
{
    uint8_t *a = area(s, w, id);
    if (!a || slot < 0 || slot >= s->nslots) {
        return NULL;
    }
    size_t slot_bytes = round_up(s->elems * sizeof(float), LINE);
    return a + flags_bytes(s) + (size_t)slot * slot_bytes + s->loff[id] * sizeof(float);
}

float *ps_shm_reply_at(ps_shm_t *s, int w, uint32_t id)
{
    uint8_t *a = area(s, w, id);
    if (!a) {
        return NULL;
    }
    size_t slot_bytes = round_up(s->elems * sizeof(float), LINE);
    return (float *)(void *)(a + flags_bytes(s) + (size_t)s->nslots * slot_bytes) + s->loff[id];
}

int ps_shm_slot_wait(ps_shm_t *s, int w, uint32_t id, int slot, int timeout_ms)
{
    uint32_t *f = flag_of(s, w, id, slot);
    struct timespec t0, now, nap = {0, 50000};
    if (!f) {
        ps_error_set("shared memory: no slot %d of chunk %u for worker %d", slot, id, w);
        return PS_EINVAL;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned spin = 0; __atomic_load_n(f, __ATOMIC_ACQUIRE) != 0; spin++) {
        if (spin < 200) {
            sched_yield();
            continue;
        }
        if (ps_signal_stop_requested()) {
            return ps_signal_stopped();
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        double ms =
            (double)(now.tv_sec - t0.tv_sec) * 1e3 + (double)(now.tv_nsec - t0.tv_nsec) / 1e6;
        if (timeout_ms >= 0 && ms >= timeout_ms) {
            ps_error_set("shared memory: the server did not take the last push of chunk %u "
                         "(slot %d) within --timeout %d s",
                         id, slot, timeout_ms / 1000);
            return PS_ETIMEDOUT;
        }
        nanosleep(&nap, NULL);
    }
    return 0;
}

void ps_shm_slot_fill(ps_shm_t *s, int w, uint32_t id, int slot)
{
    uint32_t *f = flag_of(s, w, id, slot);
    if (f) {
        __atomic_store_n(f, 1u, __ATOMIC_RELEASE);
    }
}

void ps_shm_slot_free(ps_shm_t *s, int w, uint32_t id, int slot)
{
    uint32_t *f = flag_of(s, w, id, slot);
    if (f) {
        __atomic_store_n(f, 0u, __ATOMIC_RELEASE);
    }
}

int ps_shm_endpoint_path(const char *advertised, char *out, size_t cap)
{
    size_t plen = strlen(PS_SHM_PREFIX);
    for (const char *p = advertised; p && *p;) {
        size_t n = strcspn(p, " ");
        if (n > plen && strncmp(p, PS_SHM_PREFIX, plen) == 0) {
            if (n - plen >= cap) {
                ps_error_set("shared memory: the segment path in '%.200s' is too long", advertised);
                return PS_EINVAL;
            }
            memcpy(out, p + plen, n - plen);
            out[n - plen] = '\0';
            return 0;
        }
        p += n;
        p += *p == ' ';
    }
    return PS_ENOENT;
}
