/*
 * Unit tests for common/ps_shm: a segment's name, mode and removal; that a
 * worker's mapping and the server's are the same bytes, area by area with
 * no overlap (each byte written through one and read back through the
 * other, with hand-computed offsets); the checks a worker makes before it
 * trusts a segment (owner, mode, geometry); that another uid cannot open
 * it; and the slot handshake's timeout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_cleanup.h"
#include "ps_err.h"
#include "ps_shm.h"
#include "unit_tmp.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[512];

static int setup(void **state)
{
    (void)state;
    if (ut_mkdtemp(dir, sizeof dir, "ps-shm-unit") != 0) {
        return -1;
    }
    setenv("PS_SHM_DIR", dir, 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rmdir(dir); /* empty by then: every test removes its segments */
    return 0;
}

/* 10000 floats in chunks of 1024 over 3 servers: chunk i on server i % 3,
 * so server 1 holds chunks 1, 4, 7 (1024 each) and nothing of the last
 * (chunk 9, 784 floats, on server 0). */
static void map_of(ps_chunkmap_t *m)
{
    assert_int_equal(ps_chunkmap_init(m, 10000, 1024, 3), 0);
    assert_int_equal(m->n, 10);
}

static void test_create_name_mode(void **state)
{
    (void)state;
    char a[PS_SHM_PATH], b[PS_SHM_PATH];
    ps_shm_t *s1, *s2;
    int before = ps_cleanup_count();
    assert_int_equal(ps_shm_create(&s1, a, sizeof a), 0);
    assert_int_equal(ps_shm_create(&s2, b, sizeof b), 0);
    assert_int_equal(ps_cleanup_count(), before + 2);
    /* DIR/ps-shm- and 24 hex digits (96 random bits), never the same. */
    assert_int_equal(strncmp(a, dir, strlen(dir)), 0);
    const char *name = a + strlen(dir);
    assert_int_equal(strlen(name), strlen("/ps-shm-") + 24);
    assert_int_equal(strncmp(name, "/ps-shm-", 8), 0);
    assert_int_equal(strspn(name + 8, "0123456789abcdef"), 24);
    assert_string_not_equal(a, b);
    struct stat st;
    assert_int_equal(stat(a, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_uid, geteuid());
    ps_shm_unlink(s1);
    assert_int_equal(stat(a, &st), -1); /* the name is gone at once */
    ps_shm_destroy(&s1);
    ps_shm_destroy(&s1); /* twice is safe */
    assert_null(s1);
    ps_shm_destroy(&s2);
    assert_int_equal(stat(b, &st), -1);
    assert_int_equal(ps_cleanup_count(), before);
}

static void test_bad_dir(void **state)
{
    (void)state;
    char p[PS_SHM_PATH];
    ps_shm_t *s;
    setenv("PS_SHM_DIR", "/nonexistent/ps-shm-unit", 1);
    assert_int_equal(ps_shm_create(&s, p, sizeof p), PS_EIO);
    assert_null(s);
    assert_non_null(strstr(ps_error_msg(), "/nonexistent/ps-shm-unit"));
    setenv("PS_SHM_DIR", dir, 1);
}

/* The server sizes for workers 0 and 2; the mappings share every byte. */
static void test_areas_shared(void **state)
{
    (void)state;
    ps_chunkmap_t m;
    char path[PS_SHM_PATH];
    ps_shm_t *srv, *w0, *w1 = NULL, *w2;
    const uint8_t use[3] = {1, 0, 1};
    map_of(&m);
    assert_int_equal(ps_shm_create(&srv, path, sizeof path), 0);
    assert_int_equal(ps_shm_size(srv, &m, 1, 2, 3, use), 0);
    /* Header page, then per area: flags (3 chunks x 2 slots x 4 bytes,
     * to 64), 2 push slots and a reply of 3072 floats, to a page. */
    size_t area = (64 + 3 * 12288 + 4095) / 4096 * 4096;
    assert_int_equal(ps_shm_bytes(srv), 4096 + 2 * area);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal((size_t)st.st_size, ps_shm_bytes(srv));
    assert_true(st.st_blocks * 512 >= (off_t)ps_shm_bytes(srv)); /* reserved, not sparse */
    assert_int_equal(ps_shm_attach(&w0, path, &m, 1, 2, 3, 0), 0);
    assert_int_equal(ps_shm_attach(&w1, path, &m, 1, 2, 3, 1), PS_ENOENT);
    assert_null(w1);
    assert_int_equal(ps_shm_attach(&w2, path, &m, 1, 2, 3, 2), 0);
    assert_true(ps_shm_has(srv, 0) && !ps_shm_has(srv, 1) && ps_shm_has(srv, 2));
    /* Not this server's chunk, a slot out of range, a worker without area. */
    assert_null(ps_shm_push_at(w0, 0, 0, 0));
    assert_null(ps_shm_push_at(w0, 0, 4, 2));
    assert_null(ps_shm_reply_at(srv, 1, 4));
    assert_null(ps_shm_push_at(srv, 0, 10, 0));
    /* Every float of every push slot and reply of both workers, written
     * on the worker's side with its own value, read on the server's. */
    const uint32_t ids[3] = {1, 4, 7};
    for (int w = 0; w <= 2; w += 2) {
        ps_shm_t *mine = w == 0 ? w0 : w2;
        for (int k = 0; k < 3; k++) {
            for (int slot = 0; slot <= 2; slot++) {
                float *p = slot < 2 ? ps_shm_push_at(mine, w, ids[k], slot)
                                    : ps_shm_reply_at(mine, w, ids[k]);
                assert_non_null(p);
                for (int i = 0; i < 1024; i++) {
                    p[i] = (float)(w * 100000 + k * 10000 + slot * 2000 + i);
                }
            }
        }
    }
    for (int w = 0; w <= 2; w += 2) {
        for (int k = 0; k < 3; k++) {
            for (int slot = 0; slot <= 2; slot++) {
                const float *p = slot < 2 ? ps_shm_push_at(srv, w, ids[k], slot)
                                          : ps_shm_reply_at(srv, w, ids[k]);
                for (int i = 0; i < 1024; i++) {
                    assert_true(p[i] == (float)(w * 100000 + k * 10000 + slot * 2000 + i));
                }
            }
        }
    }
    /* Chunk 4 sits right after chunk 1 in a slot (offsets among the
     * server's own floats). */
    assert_ptr_equal((float *)ps_shm_push_at(srv, 0, 4, 1),
                     (float *)ps_shm_push_at(srv, 0, 1, 1) + 1024);
    ps_shm_destroy(&w0);
    ps_shm_destroy(&w2);
    ps_shm_destroy(&srv);
    ps_chunkmap_fini(&m);
}

static void test_worker_checks(void **state)
{
    (void)state;
    ps_chunkmap_t m;
    char path[PS_SHM_PATH];
    ps_shm_t *srv, *w = NULL;
    const uint8_t use[3] = {1, 1, 1};
    map_of(&m);
    assert_int_equal(ps_shm_create(&srv, path, sizeof path), 0);
    /* Not sized yet: empty, which a worker reads as "use ipc". */
    assert_int_equal(ps_shm_attach(&w, path, &m, 1, 1, 3, 0), PS_ENOENT);
    assert_int_equal(ps_shm_size(srv, &m, 1, 1, 3, use), 0);
    /* Another geometry than the worker computes: refused, saying so. */
    assert_int_equal(ps_shm_attach(&w, path, &m, 1, 2, 3, 0), PS_EPROTO);
    assert_non_null(strstr(ps_error_msg(), "geometry"));
    assert_int_equal(ps_shm_attach(&w, path, &m, 0, 1, 3, 0), PS_EPROTO);
    assert_int_equal(ps_shm_attach(&w, path, &m, 1, 1, 4, 0), PS_EPROTO);
    assert_null(w);
    /* Readable by others: not trusted. */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(ps_shm_attach(&w, path, &m, 1, 1, 3, 0), PS_EPROTO);
    assert_non_null(strstr(ps_error_msg(), "not a private file"));
    assert_int_equal(chmod(path, 0600), 0);
    /* A symbolic link to it: refused (O_NOFOLLOW). */
    char link[600];
    snprintf(link, sizeof link, "%s.lnk", path);
    assert_int_equal(symlink(path, link), 0);
    assert_int_equal(ps_shm_attach(&w, link, &m, 1, 1, 3, 0), PS_EIO);
    unlink(link);
    int rv = ps_shm_attach(&w, path, &m, 1, 1, 3, 0);
    if (rv != 0) {
        fail_msg("%s", ps_error_msg());
    }
    /* Unlinked once mapped: the mapping still works. */
    ps_shm_unlink(srv);
    ps_shm_t *late;
    assert_int_equal(ps_shm_attach(&late, path, &m, 1, 1, 3, 1), PS_ENOENT);
    float *p = ps_shm_reply_at(w, 0, 7);
    p[5] = 42.0f;
    assert_true(ps_shm_reply_at(srv, 0, 7)[5] == 42.0f);
    ps_shm_destroy(&w);
    ps_shm_destroy(&srv);
    ps_chunkmap_fini(&m);
}

/* A process of another uid can open neither the segment nor (the same
 * check) attach to it. */
static void test_other_uid(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        skip(); /* only root can become another user */
    }
    ps_chunkmap_t m;
    char path[PS_SHM_PATH];
    ps_shm_t *srv;
    const uint8_t use[3] = {1, 1, 1};
    map_of(&m);
    assert_int_equal(chmod(dir, 0755), 0); /* the folder is not the guard here */
    assert_int_equal(ps_shm_create(&srv, path, sizeof path), 0);
    assert_int_equal(ps_shm_size(srv, &m, 1, 1, 3, use), 0);
    pid_t pid = fork();
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0) {
            _exit(3);
        }
        int fd = open(path, O_RDWR);
        int fd_ro = open(path, O_RDONLY);
        ps_shm_t *w;
        int rv = ps_shm_attach(&w, path, &m, 1, 1, 3, 0);
        _exit(fd < 0 && errno == EACCES && fd_ro < 0 && rv == PS_EIO ? 0 : 4);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    chmod(dir, 0700);
    ps_shm_destroy(&srv);
    ps_chunkmap_fini(&m);
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void test_slot_handshake(void **state)
{
    (void)state;
    ps_chunkmap_t m;
    char path[PS_SHM_PATH];
    ps_shm_t *srv, *w;
    const uint8_t use[3] = {0, 0, 1};
    map_of(&m);
    assert_int_equal(ps_shm_create(&srv, path, sizeof path), 0);
    assert_int_equal(ps_shm_size(srv, &m, 1, 3, 3, use), 0);
    assert_int_equal(ps_shm_attach(&w, path, &m, 1, 3, 3, 2), 0);
    assert_int_equal(ps_shm_nslots(w), 3);
    assert_int_equal(ps_shm_slot_wait(w, 2, 4, 1, 1000), 0); /* free from the start */
    ps_shm_slot_fill(w, 2, 4, 1);
    /* The other slots and chunks are not held by it. */
    assert_int_equal(ps_shm_slot_wait(w, 2, 4, 0, 0), 0);
    assert_int_equal(ps_shm_slot_wait(w, 2, 7, 1, 0), 0);
    double t0 = now_ms();
    assert_int_equal(ps_shm_slot_wait(w, 2, 4, 1, 200), PS_ETIMEDOUT);
    double dt = now_ms() - t0;
    assert_true(dt >= 200 && dt < 2000);
    assert_non_null(strstr(ps_error_msg(), "chunk 4"));
    ps_shm_slot_free(srv, 2, 4, 1); /* the server is done with it */
    t0 = now_ms();
    assert_int_equal(ps_shm_slot_wait(w, 2, 4, 1, 5000), 0);
    assert_true(now_ms() - t0 < 100);
    assert_int_equal(ps_shm_slot_wait(w, 2, 1, 3, 0), PS_EINVAL); /* no slot 3 */
    ps_shm_destroy(&w);
    ps_shm_destroy(&srv);
    ps_chunkmap_fini(&m);
}

static void test_endpoint_path(void **state)
{
    (void)state;
    char out[PS_SHM_PATH];
    assert_int_equal(ps_shm_endpoint_path("ipc:///t/ps-a/0 ipc:///t/ps-a/1 shm:///dev/shm/ps-shm-"
                                          "ab tcp://1.2.3.4:5",
                                          out, sizeof out),
                     0);
    assert_string_equal(out, "/dev/shm/ps-shm-ab");
    assert_int_equal(ps_shm_endpoint_path("ipc:///t/0 tcp://1.2.3.4:5", out, sizeof out),
                     PS_ENOENT);
    assert_int_equal(ps_shm_endpoint_path("shm://", out, sizeof out), PS_ENOENT);
    char small[8];
    assert_int_equal(ps_shm_endpoint_path("shm:///dev/shm/long", small, sizeof small), PS_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_name_mode), cmocka_unit_test(test_bad_dir),
        cmocka_unit_test(test_areas_shared),     cmocka_unit_test(test_worker_checks),
        cmocka_unit_test(test_other_uid),        cmocka_unit_test(test_slot_handshake),
        cmocka_unit_test(test_endpoint_path),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
