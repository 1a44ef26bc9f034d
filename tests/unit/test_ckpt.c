/*
 * Unit tests for server/srv_ckpt: checkpoints written from real stores and
 * read back, without MPI.
 *
 * The reference is the store the checkpoint was written from: every field
 * read back (step, size, layout hash, weights and velocity bit for bit,
 * each chunk's first-update state) must equal it.  A resumed store must
 * then continue the exact trajectory: one more step on the original and on
 * the resumed store gives the same bits, also when the resumed store cuts
 * the model into other chunks.  Damaged checkpoints (a flipped data byte, a
 * truncated file, a missing or garbled MANIFEST, other settings) are
 * refused, the reason logged, and the previous checkpoint is used when
 * there is one.
 *
 * Durability (the header's protocol): the server that writes the last
 * part writes the MANIFEST, whoever that is, and only then are older
 * checkpoints pruned (the newest whole one before is kept), so a crash
 * between a part and the MANIFEST leaves the previous checkpoint loadable.
 * The order of the file-system calls is observed by defining mkdir,
 * rename, rmdir and fsync in this program: the library's calls land here
 * (the executable's symbols come first), are logged with their paths
 * (fsync's through /proc/self/fd) and then done with the *at() system
 * calls.  A manifest of 300 servers reads (no fixed limit below the
 * documented bound).  A run drops the later checkpoints of an earlier run
 * in its folder before it writes (srv_ckpt_drop_newer).
 *
 * Layout: one tensor of 3000 floats, chunk 1024: chunks 0, 1 and 2 (952
 * elements).  Chunk 2 only ever gets zero-sample pushes, so it keeps no
 * momentum buffer and its first-update flag stays 0, while chunks 0 and 1
 * hold momentum: both cases go through the file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "ps_safetensors.h"
#include "srv_ckpt.h"
#include "unit_tmp.h"
#include "srv_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TOTAL 3000
#define CHUNK 1024
#define SETTINGS "lr=0.1;momentum=0.9;mode=sync"

static char root[256];

/* The file-system calls of the code under test, in order, while
 * `recording`: "mkdir PATH", "fsync PATH", "rename NEWPATH", "rmdir PATH". */
#define MAX_EVENTS 4096
static int recording;
static int nevents;
static char events[MAX_EVENTS][1024];

static void record(const char *what, const char *path)
{
    if (recording && nevents < MAX_EVENTS &&
        snprintf(events[nevents], sizeof events[0], "%s %s", what, path) < (int)sizeof events[0]) {
        nevents++;
    }
}

int mkdir(const char *path, mode_t mode)
{
    record("mkdir", path);
    return mkdirat(AT_FDCWD, path, mode);
}

int rename(const char *from, const char *to)
{
    record("rename", to);
    return renameat(AT_FDCWD, from, AT_FDCWD, to);
}

int rmdir(const char *path)
{
    record("rmdir", path);
    return unlinkat(AT_FDCWD, path, AT_REMOVEDIR);
}

int fsync(int fd)
{
    char link[64], path[300];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    path[n > 0 ? n : 0] = '\0';
    record("fsync", path);
    return (int)syscall(SYS_fsync, fd);
}

/* Index of the first event equal to "WHAT PATH" at or after `from`; -1. */
static int event_at(int from, const char *what, const char *path)
{
    char want[1024];
    snprintf(want, sizeof want, "%s %s", what, path);
    for (int i = from; i < nevents; i++) {
        if (strcmp(events[i], want) == 0) {
            return i;
        }
    }
    return -1;
}

static void dump_events(void)
{
    for (int i = 0; i < nevents; i++) {
        fprintf(stderr, "# event %d: %s\n", i, events[i]);
    }
}

/* A fresh, empty checkpoint folder per test. */
static int setup(void **state)
{
    (void)state;
    /* Canonical, as /proc/self/fd names the folders fsync is given. */
    if (ut_mkdtemp(root, sizeof root, "test_ckpt") != 0) {
        return -1;
    }
    recording = 0;
    nevents = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ut_rm_tree(root);
    return 0;
}

/* Pseudo-random floats in [-1, 1) with full mantissas, by flat index. */
static float val(uint64_t seed, size_t i)
{
    uint64_t s = (seed * 0x9e3779b97f4a7c15ull) ^ (i * 0xbf58476d1ce4e5b9ull);
    s ^= s >> 31;
    s *= 0x94d049bb133111ebull;
    s ^= s >> 29;
    return (float)((double)(s >> 40) / (double)(1 << 24) * 2.0 - 1.0);
}

/* Server `server` of `nservers` over a model of one tensor of `total`
 * floats, momentum 0.9, one worker, weights initialised by flat index (so
 * every server agrees). */
static void store_new_total(srv_store_t *s, size_t total, size_t chunk, int server, int nservers)
{
    const int64_t d[1] = {(int64_t)total};
    ps_layout_t *l = malloc(sizeof *l);
    assert_non_null(l);
    ps_layout_init(l);
    assert_int_equal(ps_layout_add(l, "w", 1, d), 0);
    srv_optim_cfg_t opt = {.lr = 0.1, .momentum = 0.9};
    assert_int_equal(srv_store_init(s, &l, chunk, server, nservers, 1, &opt, NULL), 0);
    float *w = malloc(chunk * sizeof *w);
    assert_non_null(w);
    for (size_t i = 0; i < s->nlocal; i++) {
        srv_chunk_t *c = &s->chunks[i];
        for (size_t k = 0; k < c->count; k++) {
            w[k] = val(1, c->offset + k);
        }
        assert_int_equal(srv_store_set_init(s, c, w), 0);
    }
    free(w);
}

/* The same over the 3000-float model. */
static void store_new(srv_store_t *s, size_t chunk, int server, int nservers)
{
    store_new_total(s, TOTAL, chunk, server, nservers);
}

/* Step `step` on every local chunk: a gradient by flat index, except that
 * the elements from 2048 on (chunk 2 at chunk size 1024) get zero-sample
 * pushes while `idle_tail` is set. */
static void store_step(srv_store_t *s, uint64_t step, int idle_tail)
{
    static float g[TOTAL];
    for (size_t i = 0; i < s->nlocal; i++) {
        srv_chunk_t *c = &s->chunks[i];
        for (size_t k = 0; k < c->count; k++) {
            g[k] = val(100 + step, c->offset + k);
        }
        uint32_t samples = idle_tail && c->offset >= 2048 ? 0 : 1;
        assert_int_equal(srv_store_push(s, c, 0, step, step, samples, g, NULL), 1);
    }
}

static void assert_bits(const float *got, const float *want, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0) {
            fail_msg("%s: element %zu is %a, want %a", what, i, (double)got[i], (double)want[i]);
        }
    }
}

/* The loaded state holds exactly this store's chunks. */
static void assert_state_has(const srv_ckpt_state_t *st, const srv_store_t *s)
{
    static const float zeros[TOTAL];
    for (size_t i = 0; i < s->nlocal; i++) {
        const srv_chunk_t *c = &s->chunks[i];
        assert_bits(st->w + c->offset, c->w, c->count, "weights");
        /* Without a first update there is no buffer in the file: zeros. */
        assert_bits(st->buf + c->offset, c->had_update ? c->buf : zeros, c->count, "velocity");
        int found = 0;
        for (size_t r = 0; r < st->nranges; r++) {
            if (st->range_off[r] == c->offset) {
                assert_int_equal(st->range_cnt[r], c->count);
                assert_int_equal(st->range_had[r], c->had_update);
                found++;
            }
        }
        assert_int_equal(found, 1);
    }
}

/* srv_ckpt_load with stderr captured into `log` (what it reports about
 * the checkpoints it passes over). */
static int load_logged(srv_ckpt_state_t *st, const char *settings, char *log, size_t cap)
{
    char path[300];
    snprintf(path, sizeof path, "%s/stderr.txt", root);
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(path, "w+");
    assert_non_null(f);
    dup2(fileno(f), 2);
    int rv = srv_ckpt_load(st, root, settings);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(f);
    size_t n = fread(log, 1, cap - 1, f);
    log[n] = '\0';
    fclose(f);
    unlink(path);
    return rv;
}

static void expect_refused(const char *log_has)
{
    srv_ckpt_state_t st;
    char log[4096];
    assert_int_equal(load_logged(&st, SETTINGS, log, sizeof log), PS_ENOENT);
    if (!strstr(ps_error_msg(), "no usable checkpoint")) {
        fail_msg("load error: %s", ps_error_msg());
    }
    if (!strstr(log, log_has)) {
        fail_msg("the log does not say '%s':\n%s", log_has, log);
    }
    assert_null(st.w); /* nothing held after a failure */
}

static void step_path(char *out, size_t cap, uint64_t step, const char *file)
{
    snprintf(out, cap, "%s/step-%08llu/%s", root, (unsigned long long)step, file);
}

/* One server, three steps in: weights, velocity and flags come back. */
static void test_roundtrip(void **state)
{
    (void)state;
    srv_store_t s;
    store_new(&s, CHUNK, 0, 1);
    for (uint64_t t = 0; t < 3; t++) {
        store_step(&s, t, 1);
    }
    assert_int_equal(s.chunks[0].had_update, 1);
    assert_int_equal(s.chunks[2].had_update, 0);
    assert_int_equal(srv_ckpt_write(&s, NULL, root, 3, 1, SETTINGS), 0);

    srv_ckpt_state_t st;
    assert_int_equal(srv_ckpt_load(&st, root, SETTINGS), 0);
    assert_true(st.step == 3);
    assert_int_equal(st.total, TOTAL);
    assert_true(st.layout_hash == ps_layout_hash(s.layout));
    assert_int_equal(st.nranges, 3);
    assert_state_has(&st, &s);
    srv_ckpt_fini(&st);
    srv_ckpt_fini(&st); /* safe twice */

    /* The file is plain safetensors with the documented names. */
    char path[400];
    step_path(path, sizeof path, 3, "server-0.safetensors");
    ps_st_file_t *f = NULL;
    assert_int_equal(ps_st_open(&f, path), 0);
    assert_string_equal(ps_st_meta(f, "format"), "ps-checkpoint");
    assert_string_equal(ps_st_meta(f, "step"), "3");
    assert_string_equal(ps_st_meta(f, "settings"), SETTINGS);
    assert_int_equal(ps_st_count(f), 5); /* chunk.0.w/.buf, chunk.1.w/.buf, chunk.2.w */
    const float *d;
    int nd;
    int64_t sh[4];
    assert_int_equal(ps_st_get(f, "chunk.1.buf", &d, &nd, sh), 0);
    assert_bits(d, s.chunks[1].buf, CHUNK, "chunk.1.buf");
    assert_int_not_equal(ps_st_get(f, "chunk.2.buf", &d, &nd, sh), 0);
    ps_st_close(&f);
    srv_store_fini(&s);
}

/* Two servers write their parts; server 0's MANIFEST names both files. */
static void test_two_servers_and_manifest(void **state)
{
    (void)state;
    srv_store_t s0, s1;
    store_new(&s0, CHUNK, 0, 2);
    store_new(&s1, CHUNK, 1, 2);
    for (uint64_t t = 0; t < 2; t++) {
        store_step(&s0, t, 1);
        store_step(&s1, t, 1);
    }
    assert_int_equal(srv_ckpt_write(&s1, NULL, root, 2, 2, SETTINGS), 0);
    char path[400];
    step_path(path, sizeof path, 2, "MANIFEST");
    assert_int_not_equal(access(path, F_OK), 0); /* server 1 writes none */
    assert_int_equal(srv_ckpt_write(&s0, NULL, root, 2, 2, SETTINGS), 0);

    char text[1024], want[1024];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    snprintf(want, sizeof want,
             "ps-checkpoint 1\nstep 2\nnservers 2\ntotal 3000\nlayout %016llx\n"
             "file server-0.safetensors\nfile server-1.safetensors\n",
             (unsigned long long)ps_layout_hash(s0.layout));
    assert_string_equal(text, want);

    srv_ckpt_state_t st;
    assert_int_equal(srv_ckpt_load(&st, root, SETTINGS), 0);
    assert_true(st.step == 2);
    assert_int_equal(st.nranges, 3);
    assert_state_has(&st, &s0);
    assert_state_has(&st, &s1);
    srv_ckpt_fini(&st);
    srv_store_fini(&s0);
    srv_store_fini(&s1);
}

/* One more step on the original and on a store resumed from the file. */
static void check_resume(size_t chunk)
{
    srv_store_t orig, back;
    store_new(&orig, CHUNK, 0, 1);
    for (uint64_t t = 0; t < 3; t++) {
        store_step(&orig, t, 1);
    }
    assert_int_equal(srv_ckpt_write(&orig, NULL, root, 3, 1, SETTINGS), 0);
    srv_ckpt_state_t st;
    assert_int_equal(srv_ckpt_load(&st, root, SETTINGS), 0);
    store_new(&back, chunk, 0, 1);
    srv_ckpt_apply(&st, &back);
    srv_ckpt_fini(&st);
    for (size_t i = 0; i < back.nlocal; i++) {
        srv_chunk_t *c = &back.chunks[i];
        assert_true(c->version == 3);
        assert_int_equal(c->initialized, 1);
        /* A chunk takes the flag of the old chunk its first element was in. */
        assert_int_equal(c->had_update, c->offset < 2048);
    }
    /* Now every chunk is busy: chunk 2 gets its first update after resuming. */
    store_step(&orig, 3, 0);
    store_step(&back, 3, 0);
    float wa[TOTAL], wb[TOTAL], ba[TOTAL], bb[TOTAL];
    for (size_t i = 0; i < orig.nlocal; i++) {
        const srv_chunk_t *c = &orig.chunks[i];
        memcpy(wa + c->offset, c->w, c->count * sizeof(float));
        memcpy(ba + c->offset, c->buf, c->count * sizeof(float));
    }
    for (size_t i = 0; i < back.nlocal; i++) {
        const srv_chunk_t *c = &back.chunks[i];
        memcpy(wb + c->offset, c->w, c->count * sizeof(float));
        memcpy(bb + c->offset, c->buf, c->count * sizeof(float));
    }
    assert_bits(wb, wa, TOTAL, "weights after resuming");
    assert_bits(bb, ba, TOTAL, "velocity after resuming");
    srv_store_fini(&orig);
    srv_store_fini(&back);
}

static void test_resume_same_chunks(void **state)
{
    (void)state;
    check_resume(CHUNK);
}

static void test_resume_other_chunks(void **state)
{
    (void)state;
    check_resume(2048); /* chunks [0, 2048) and [2048, 3000) */
}

/* Three checkpoints of one server, each with the state of its step. */
static void write_steps(srv_store_t *s, int n)
{
    store_new(s, CHUNK, 0, 1);
    for (int k = 1; k <= n; k++) {
        store_step(s, (uint64_t)k - 1, 1);
        assert_int_equal(srv_ckpt_write(s, NULL, root, (uint64_t)k, 1, SETTINGS), 0);
    }
}

static void flip_last_byte(const char *path)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, -1, SEEK_END), 0);
    int c = fgetc(f);
    assert_int_equal(fseek(f, -1, SEEK_END), 0);
    fputc(c ^ 0x01, f);
    fclose(f);
}

/* A flipped bit in the newest checkpoint's data: refused by its CRC, the
 * previous checkpoint is used instead. */
static void test_corrupt_falls_back(void **state)
{
    (void)state;
    srv_store_t s;
    write_steps(&s, 2);
    char path[400], log[4096];
    step_path(path, sizeof path, 2, "server-0.safetensors");
    flip_last_byte(path);
    srv_ckpt_state_t st;
    assert_int_equal(load_logged(&st, SETTINGS, log, sizeof log), 0);
    assert_true(st.step == 1);
    if (!strstr(log, "checkpoint step 2 is unusable") || !strstr(log, "bad checksum") ||
        !strstr(log, "trying the previous one")) {
        fail_msg("log: %s", log);
    }
    srv_ckpt_fini(&st);
    srv_store_fini(&s);
}

static void test_corrupt_only_one(void **state)
{
    (void)state;
    srv_store_t s;
    write_steps(&s, 1);
    char path[400];
    step_path(path, sizeof path, 1, "server-0.safetensors");
    flip_last_byte(path);
    expect_refused("bad checksum");
    srv_store_fini(&s);
}

static void test_truncated(void **state)
{
    (void)state;
    srv_store_t s;
    write_steps(&s, 1);
    char path[400];
    step_path(path, sizeof path, 1, "server-0.safetensors");
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size / 2), 0);
    expect_refused("server-0.safetensors");
    srv_store_fini(&s);
}

static void test_manifest_missing_or_garbled(void **state)
{
    (void)state;
    srv_store_t s;
    write_steps(&s, 1);
    char path[400];
    step_path(path, sizeof path, 1, "MANIFEST");
    assert_int_equal(unlink(path), 0);
    expect_refused("MANIFEST: missing");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("ps-checkpoint 1\nstep 1\n", f); /* no total, layout or files */
    fclose(f);
    expect_refused("MANIFEST: malformed");
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "ps-checkpoint 1\nstep 7\nnservers 1\ntotal 3000\nlayout %016llx\n"
            "file server-0.safetensors\n",
            (unsigned long long)ps_layout_hash(s.layout));
    fclose(f);
    expect_refused("manifest says step 7");
    srv_store_fini(&s);
}

static void test_other_settings(void **state)
{
    (void)state;
    srv_store_t s;
    write_steps(&s, 1);
    srv_ckpt_state_t st;
    char log[4096];
    assert_int_equal(load_logged(&st, "lr=0.2;momentum=0.9;mode=sync", log, sizeof log), PS_ENOENT);
    /* The setting that differs is named with both values. */
    if (!strstr(log, "other settings: lr (checkpoint 0.1, this run 0.2)") ||
        strstr(log, "momentum (")) {
        fail_msg("log: %s", log);
    }
    srv_store_fini(&s);
}

static void test_no_checkpoint(void **state)
{
    (void)state;
    srv_ckpt_state_t st;
    assert_int_equal(srv_ckpt_load(&st, root, SETTINGS), PS_ENOENT);
    assert_non_null(strstr(ps_error_msg(), "no usable checkpoint"));
    char missing[300];
    snprintf(missing, sizeof missing, "%s/nowhere", root);
    assert_int_equal(srv_ckpt_load(&st, missing, SETTINGS), PS_ENOENT);
    assert_non_null(strstr(ps_error_msg(), "nowhere"));
}

static int has_step_dir(uint64_t step)
{
    char path[400];
    snprintf(path, sizeof path, "%s/step-%08llu", root, (unsigned long long)step);
    return access(path, F_OK) == 0;
}

/* A single server completes each checkpoint: it keeps the newest and the
 * one before; a server of two whose partner has not written deletes
 * nothing. */
static void test_prune(void **state)
{
    (void)state;
    srv_store_t s;
    write_steps(&s, 2);
    assert_true(has_step_dir(1) && has_step_dir(2));
    store_step(&s, 2, 1);
    assert_int_equal(srv_ckpt_write(&s, NULL, root, 3, 1, SETTINGS), 0);
    assert_true(!has_step_dir(1) && has_step_dir(2) && has_step_dir(3));
    store_step(&s, 3, 1);
    assert_int_equal(srv_ckpt_write(&s, NULL, root, 4, 1, SETTINGS), 0);
    assert_true(!has_step_dir(2) && has_step_dir(3) && has_step_dir(4));
    srv_store_fini(&s);

    srv_store_t s1; /* server 1 of 2, writing a newer step: deletes nothing */
    store_new(&s1, CHUNK, 1, 2);
    for (uint64_t t = 0; t < 6; t++) {
        store_step(&s1, t, 1);
    }
    assert_int_equal(srv_ckpt_write(&s1, NULL, root, 6, 2, SETTINGS), 0);
    assert_true(has_step_dir(3) && has_step_dir(4) && has_step_dir(6));
    srv_store_fini(&s1);
}

/* Two servers over the 3000-float model, `steps` steps in. */
static void pair_new(srv_store_t *s0, srv_store_t *s1, uint64_t steps)
{
    store_new(s0, CHUNK, 0, 2);
    store_new(s1, CHUNK, 1, 2);
    for (uint64_t t = 0; t < steps; t++) {
        store_step(s0, t, 1);
        store_step(s1, t, 1);
    }
}

static void pair_step(srv_store_t *s0, srv_store_t *s1, uint64_t step)
{
    store_step(s0, step, 1);
    store_step(s1, step, 1);
}

/* Server 0 writes first: the MANIFEST waits for server 1's part, and it is
 * server 1, the last to write, that completes the checkpoint. */
static void test_last_part_writes_manifest(void **state)
{
    (void)state;
    srv_store_t s0, s1;
    pair_new(&s0, &s1, 2);
    char path[400];
    step_path(path, sizeof path, 2, "MANIFEST");
    assert_int_equal(srv_ckpt_write(&s0, NULL, root, 2, 2, SETTINGS), 0);
    if (access(path, F_OK) == 0) {
        fail_msg("server 0 wrote the MANIFEST before server 1's part existed");
    }
    assert_int_equal(srv_ckpt_write(&s1, NULL, root, 2, 2, SETTINGS), 0);
    assert_int_equal(access(path, F_OK), 0);
    srv_ckpt_state_t st;
    assert_int_equal(srv_ckpt_load(&st, root, SETTINGS), 0);
    assert_true(st.step == 2);
    assert_state_has(&st, &s0);
    assert_state_has(&st, &s1);
    srv_ckpt_fini(&st);
    srv_store_fini(&s0);
    srv_store_fini(&s1);
}

/* Server 1 fails (or crashes) before its parts of steps 2 and 3 while
 * server 0 writes its own: neither becomes whole, and step 1, the only
 * whole checkpoint, is neither pruned nor passed over.  When server 1's
 * part of step 3 arrives late, step 3 is whole and the incomplete step 2
 * is pruned, step 1 kept as the previous whole one. */
static void test_part_without_manifest_keeps_previous(void **state)
{
    (void)state;
    srv_store_t s0, s1;
    pair_new(&s0, &s1, 1);
    assert_int_equal(srv_ckpt_write(&s1, NULL, root, 1, 2, SETTINGS), 0);
    assert_int_equal(srv_ckpt_write(&s0, NULL, root, 1, 2, SETTINGS), 0);
    pair_step(&s0, &s1, 1);
    assert_int_equal(srv_ckpt_write(&s0, NULL, root, 2, 2, SETTINGS), 0);
    pair_step(&s0, &s1, 2);
    assert_int_equal(srv_ckpt_write(&s0, NULL, root, 3, 2, SETTINGS), 0);

    char path[400], log[4096];
    step_path(path, sizeof path, 3, "MANIFEST");
    assert_int_not_equal(access(path, F_OK), 0);
    assert_true(has_step_dir(1));
    srv_ckpt_state_t st;
    assert_int_equal(load_logged(&st, SETTINGS, log, sizeof log), 0);
    if (st.step != 1 || !strstr(log, "step 3 is unusable") || !strstr(log, "MANIFEST: missing")) {
        fail_msg("loaded step %llu; log:\n%s", (unsigned long long)st.step, log);
    }
    srv_ckpt_fini(&st);

    assert_int_equal(srv_ckpt_write(&s1, NULL, root, 3, 2, SETTINGS), 0);
    assert_int_equal(access(path, F_OK), 0);
    assert_true(has_step_dir(1) && !has_step_dir(2) && has_step_dir(3));
    assert_int_equal(srv_ckpt_load(&st, root, SETTINGS), 0);
    assert_true(st.step == 3);
    assert_state_has(&st, &s0);
    assert_state_has(&st, &s1);
    srv_ckpt_fini(&st);
    srv_store_fini(&s0);
    srv_store_fini(&s1);
}

/* The order on disk: the new step folder's entry is synced in its parent
 * before a part goes into it; a folder created for --checkpoint-dir is
 * synced in its own parent; older checkpoints are removed only after the
 * new MANIFEST is in place. */
static void test_sync_and_prune_order(void **state)
{
    (void)state;
    srv_store_t s;
    char dir[300], sdir[400], part[450], manifest[450], old[400];
    snprintf(dir, sizeof dir, "%s/ck", root);
    store_new(&s, CHUNK, 0, 1);
    recording = 1;
    for (uint64_t k = 1; k <= 3; k++) {
        store_step(&s, k - 1, 1);
        assert_int_equal(srv_ckpt_write(&s, NULL, dir, k, 1, SETTINGS), 0);
    }
    recording = 0;
    int made = event_at(0, "mkdir", dir), synced = event_at(made + 1, "fsync", root);
    if (made < 0 || synced < 0) {
        dump_events();
        fail_msg("%s was not synced after creating %s", root, dir);
    }
    for (uint64_t k = 1; k <= 3; k++) {
        snprintf(sdir, sizeof sdir, "%s/step-%08llu", dir, (unsigned long long)k);
        snprintf(part, sizeof part, "%s/server-0.safetensors", sdir);
        made = event_at(0, "mkdir", sdir);
        synced = made < 0 ? -1 : event_at(made + 1, "fsync", dir);
        int placed = event_at(0, "rename", part);
        if (made < 0 || synced < 0 || placed < synced) {
            dump_events();
            fail_msg("step %llu: mkdir at %d, %s synced at %d, part renamed at %d",
                     (unsigned long long)k, made, dir, synced, placed);
        }
    }
    /* Step 3's MANIFEST, then step 1 removed. */
    snprintf(manifest, sizeof manifest, "%s/step-00000003/MANIFEST", dir);
    snprintf(old, sizeof old, "%s/step-00000001", dir);
    int mf = event_at(0, "rename", manifest), gone = event_at(0, "rmdir", old);
    if (mf < 0 || gone < mf) {
        dump_events();
        fail_msg("MANIFEST of step 3 at %d, step 1 removed at %d", mf, gone);
    }
    srv_store_fini(&s);
}

/* 300 servers, one chunk each: the manifest lists 300 files and the
 * checkpoint loads whole. */
static void test_manifest_300_servers(void **state)
{
    (void)state;
    enum { NS = 300 };
    const size_t total = (size_t)NS * CHUNK;
    srv_store_t *s = calloc(NS, sizeof *s);
    assert_non_null(s);
    for (int r = 0; r < NS; r++) {
        store_new_total(&s[r], total, CHUNK, r, NS);
        assert_int_equal(s[r].nlocal, 1);
        assert_int_equal(srv_ckpt_write(&s[r], NULL, root, 1, NS, SETTINGS), 0);
    }
    srv_ckpt_state_t st;
    if (srv_ckpt_load(&st, root, SETTINGS) != 0) {
        fail_msg("load: %s", ps_error_msg());
    }
    assert_int_equal(st.total, total);
    assert_int_equal(st.nranges, NS);
    for (int r = 0; r < NS; r++) {
        assert_bits(st.w + s[r].chunks[0].offset, s[r].chunks[0].w, CHUNK, "weights");
        srv_store_fini(&s[r]);
    }
    srv_ckpt_fini(&st);
    free(s);
}

static void write_manifest_text(uint64_t step, const char *head, int nfiles)
{
    char path[400];
    snprintf(path, sizeof path, "%s/step-%08llu", root, (unsigned long long)step);
    mkdir(path, 0755);
    step_path(path, sizeof path, step, "MANIFEST");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(head, f);
    for (int i = 0; i < nfiles; i++) {
        fprintf(f, "file server-%d.safetensors\n", i);
    }
    fclose(f);
}

/* A manifest's server count is bounded and its file list may not exceed
 * it: refused with a message, before any file is opened. */
static void test_manifest_bounds(void **state)
{
    (void)state;
    write_manifest_text(1,
                        "ps-checkpoint 1\nstep 1\nnservers 2000000\ntotal 3000\n"
                        "layout 0123456789abcdef\n",
                        1);
    expect_refused("nservers 2000000");
    write_manifest_text(1,
                        "ps-checkpoint 1\nstep 1\nnservers 2\ntotal 3000\n"
                        "layout 0123456789abcdef\n",
                        3);
    expect_refused("more files than its 2 servers");
}

/* A run resuming at step 1 drops the folder's later step folders (left
 * unfinished, or refused by the resume); its own step-2 parts then never meet the earlier
 * run's: server 1's part alone does not make step 2 whole, though the
 * earlier run's server-0 part was there. */
static void test_drop_newer(void **state)
{
    (void)state;
    srv_store_t s0, s1, e0, e1;
    pair_new(&e0, &e1, 4); /* the earlier run: other values at steps 2 and 3 */
    for (uint64_t k = 2; k <= 3; k++) {
        assert_int_equal(srv_ckpt_write(&e0, NULL, root, k, 2, SETTINGS), 0);
        assert_int_equal(srv_ckpt_write(&e1, NULL, root, k, 2, SETTINGS), 0);
    }
    pair_new(&s0, &s1, 1);
    assert_int_equal(srv_ckpt_write(&s0, NULL, root, 1, 2, SETTINGS), 0);
    assert_int_equal(srv_ckpt_write(&s1, NULL, root, 1, 2, SETTINGS), 0);
    assert_true(has_step_dir(1) && has_step_dir(2) && has_step_dir(3));

    assert_int_equal(srv_ckpt_drop_newer(root, 1, 1), 0);
    assert_true(has_step_dir(1) && !has_step_dir(2) && !has_step_dir(3));
    pair_step(&s0, &s1, 1);
    assert_int_equal(srv_ckpt_write(&s1, NULL, root, 2, 2, SETTINGS), 0);
    char path[400];
    step_path(path, sizeof path, 2, "MANIFEST");
    assert_int_not_equal(access(path, F_OK), 0);
    srv_ckpt_state_t st;
    assert_int_equal(srv_ckpt_load(&st, root, SETTINGS), 0);
    assert_true(st.step == 1);
    srv_ckpt_fini(&st);

    /* A new run (step 0) never deletes a whole checkpoint: the folder
     * holding step 1 is refused, naming --resume, and kept as it was. */
    assert_int_equal(srv_ckpt_drop_newer(root, 0, 0), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "already holds a checkpoint of another run (step 1)"));
    assert_non_null(strstr(ps_error_msg(), "--resume"));
    assert_true(has_step_dir(1) && has_step_dir(2));
    /* Only unfinished parts left (step 2 has no MANIFEST): a new run drops
     * them; a missing folder is no error. */
    step_path(path, sizeof path, 1, "MANIFEST");
    assert_int_equal(unlink(path), 0);
    assert_int_equal(srv_ckpt_drop_newer(root, 0, 0), 0);
    assert_true(!has_step_dir(1) && !has_step_dir(2));
    char missing[300];
    snprintf(missing, sizeof missing, "%s/nowhere", root);
    assert_int_equal(srv_ckpt_drop_newer(missing, 0, 0), 0);
    srv_store_fini(&s0);
    srv_store_fini(&s1);
    srv_store_fini(&e0);
    srv_store_fini(&e1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_servers_and_manifest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_same_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_other_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_falls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_only_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manifest_missing_or_garbled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_part_writes_manifest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_part_without_manifest_keeps_previous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_and_prune_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manifest_300_servers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manifest_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_newer, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
