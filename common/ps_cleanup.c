#include "ps_cleanup.h"

#include "ps_err.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A slot is claimed (BUSY) before its path is written or removed, so the
 * signal handler never reads a half-written path nor removes one twice. */
enum { FREE, BUSY, FILE_PATH, DIR_PATH };
_Static_assert(ATOMIC_INT_LOCK_FREE == 2 && ATOMIC_LONG_LOCK_FREE == 2,
               "a signal handler may only use lock-free atomics");

typedef struct {
    _Atomic int state;
    _Atomic unsigned long seq; /* registration order, for the folders */
    char path[PS_CLEANUP_PATH_MAX];
} slot_t;

static slot_t slots[PS_CLEANUP_MAX];
static _Atomic unsigned long next_seq = 1;
static atomic_flag at_exit_set = ATOMIC_FLAG_INIT;

static void run_at_exit(void)
{
    ps_cleanup_run();
}

static int add(const char *path, int kind)
{
    size_t n = path ? strlen(path) : 0;
    if (n == 0 || n >= PS_CLEANUP_PATH_MAX) {
        ps_error_set("cleanup: path of %zu bytes (1 to %d)", n, PS_CLEANUP_PATH_MAX - 1);
        return PS_EINVAL;
    }
    if (!atomic_flag_test_and_set(&at_exit_set)) {
        atexit(run_at_exit);
    }
    for (int i = 0; i < PS_CLEANUP_MAX; i++) {
        int expect = FREE;
        if (atomic_compare_exchange_strong(&slots[i].state, &expect, BUSY)) {
            memcpy(slots[i].path, path, n + 1);
            atomic_store(&slots[i].seq, atomic_fetch_add(&next_seq, 1));
            atomic_store(&slots[i].state, kind);
            return 0;
        }
    }
    ps_error_set("cleanup: more than %d paths to remove at exit (%s)", PS_CLEANUP_MAX, path);
    return PS_ENOMEM;
}

int ps_cleanup_add_file(const char *path)
{
    return add(path, FILE_PATH);
}

int ps_cleanup_add_dir(const char *path)
{
    return add(path, DIR_PATH);
}

/* Take slot i out of the table if it holds `kind` (any kind: -1). */
static int claim(int i, int kind)
{
    int s = atomic_load(&slots[i].state);
    if (s != FILE_PATH && s != DIR_PATH) {
        return 0;
    }
    if (kind >= 0 && s != kind) {
        return 0;
    }
    return atomic_compare_exchange_strong(&slots[i].state, &s, BUSY) ? s : 0;
}

void ps_cleanup_forget(const char *path)
{
    for (int i = 0; path && i < PS_CLEANUP_MAX; i++) {
        int s = atomic_load(&slots[i].state);
        if ((s == FILE_PATH || s == DIR_PATH) && strcmp(slots[i].path, path) == 0 &&
            atomic_compare_exchange_strong(&slots[i].state, &s, BUSY)) {
            atomic_store(&slots[i].state, FREE);
        }
    }
}

/* The registered folder registered last, or -1. */
static int newest_dir(void)
{
    int best = -1;
    unsigned long best_seq = 0;
    for (int i = 0; i < PS_CLEANUP_MAX; i++) {
        unsigned long seq = atomic_load(&slots[i].seq);
        if (atomic_load(&slots[i].state) == DIR_PATH && seq >= best_seq) {
            best = i;
            best_seq = seq;
        }
    }
    return best;
}

/* Only unlink, rmdir and atomics: safe in a signal handler. */
void ps_cleanup_run(void)
{
    for (int i = 0; i < PS_CLEANUP_MAX; i++) {
        if (claim(i, FILE_PATH)) {
            unlink(slots[i].path);
            atomic_store(&slots[i].state, FREE);
        }
    }
    /* Inner folders (registered after the folder around them) first. */
    for (int i = newest_dir(), n = 0; i >= 0 && n < PS_CLEANUP_MAX; i = newest_dir(), n++) {
        if (claim(i, DIR_PATH)) {
            rmdir(slots[i].path);
            atomic_store(&slots[i].state, FREE);
        }
    }
}

int ps_cleanup_count(void)
{
    int n = 0;
    for (int i = 0; i < PS_CLEANUP_MAX; i++) {
        int s = atomic_load(&slots[i].state);
        n += s == FILE_PATH || s == DIR_PATH;
    }
    return n;
}
