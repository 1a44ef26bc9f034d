/*
 * Unit tests for common/ps_wire: the 64-byte header codec.
 *
 * The fixed-bytes test compares the encoder with an array written by hand
 * from the offset table in ps_wire.h (and decodes that array back), so a
 * swapped field, a wrong width or a big-endian store is caught without
 * trusting the codec.  The rest checks every refusal the header promises,
 * including every truncation of a valid header.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "ps_wire.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A PUSH with a distinct byte pattern in every field (offsets per the
 * table in ps_wire.h, little endian). */
static const uint8_t push_bytes[PS_WIRE_HDR_SIZE] = {
    0x50, 0x53, 0x4d, 0x51,                         /*  0 magic "PSMQ" */
    0x05, 0x00,                                     /*  4 version 5 */
    0x05,                                           /*  6 type PUSH */
    0x00,                                           /*  7 flags */
    0x04, 0x03, 0x02, 0x01,                         /*  8 sender 0x01020304 */
    0x0d, 0x0c, 0x0b, 0x0a,                         /* 12 request 0x0a0b0c0d */
    0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /* 16 step */
    0x24, 0x23, 0x22, 0x21,                         /* 24 chunk 0x21222324 */
    0x00, 0x00, 0x00, 0x00,                         /* 28 reserved */
    0x38, 0x37, 0x36, 0x35, 0x34, 0x33, 0x32, 0x31, /* 32 offset */
    0x00, 0x01, 0x00, 0x00,                         /* 40 count 256 */
    0x44, 0x43, 0x42, 0x41,                         /* 44 samples 0x41424344 */
    0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 48 payload 1024 */
    0x58, 0x57, 0x56, 0x55, 0x54, 0x53, 0x52, 0x51, /* 56 base */
};

static ps_hdr_t push_hdr(void)
{
    ps_hdr_t h = ps_wire_hdr(PS_MSG_PUSH, 0x01020304u);
    h.request = 0x0a0b0c0du;
    h.step = 0x1122334455667788ull;
    h.chunk = 0x21222324u;
    h.offset = 0x3132333435363738ull;
    h.count = 256;
    h.samples = 0x41424344u;
    h.payload = 1024;
    h.base = 0x5152535455565758ull;
    return h;
}

static void assert_hdr_equal(const ps_hdr_t *a, const ps_hdr_t *b)
{
    assert_int_equal(a->magic, b->magic);
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->sender, b->sender);
    assert_int_equal(a->request, b->request);
    assert_true(a->step == b->step);
    assert_int_equal(a->chunk, b->chunk);
    assert_int_equal(a->reserved, b->reserved);
    assert_true(a->offset == b->offset);
    assert_int_equal(a->count, b->count);
    assert_int_equal(a->samples, b->samples);
    assert_true(a->payload == b->payload);
    assert_true(a->base == b->base);
}

/* Decodes from an exact-size heap copy so valgrind sees any over-read. */
static int decode_copy(ps_hdr_t *h, const uint8_t *buf, size_t len, size_t payload_len)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    int rv = ps_wire_decode(h, copy, len, payload_len);
    free(copy);
    return rv;
}

/* Refused with PS_EPROTO and a detail containing `needle` (if given). */
static void expect_reject(const uint8_t *buf, size_t len, size_t payload_len, const char *needle)
{
    ps_hdr_t h;
    ps_error_clear();
    int rv = decode_copy(&h, buf, len, payload_len);
    if (rv != PS_EPROTO) {
        fail_msg("decode returned %d, want PS_EPROTO (%d)", rv, PS_EPROTO);
    }
    const char *msg = ps_error_msg();
    assert_string_not_equal(msg, "no detail recorded");
    if (needle && !strstr(msg, needle)) {
        fail_msg("detail '%s' does not mention '%s'", msg, needle);
    }
}

static void expect_reject_hdr(const ps_hdr_t *h, size_t payload_len, const char *needle)
{
    uint8_t buf[PS_WIRE_HDR_SIZE];
    ps_wire_encode(h, buf);
    expect_reject(buf, sizeof buf, payload_len, needle);
}

static void expect_accept_hdr(const ps_hdr_t *h, size_t payload_len)
{
    uint8_t buf[PS_WIRE_HDR_SIZE];
    ps_hdr_t got;
    ps_wire_encode(h, buf);
    int rv = decode_copy(&got, buf, sizeof buf, payload_len);
    if (rv != 0) {
        fail_msg("decode refused a valid %s: %s", ps_wire_type_name(h->type), ps_error_msg());
    }
    assert_hdr_equal(&got, h);
}

/* Does `msg` contain `n` as a whole decimal number? */
static int has_number(const char *msg, unsigned long n)
{
    for (const char *p = msg; *p; p++) {
        if (isdigit((unsigned char)*p) && (p == msg || !isdigit((unsigned char)p[-1]))) {
            if (strtoul(p, NULL, 10) == n) {
                return 1;
            }
        }
    }
    return 0;
}

static void test_encode_fixed_bytes(void **state)
{
    (void)state;
    uint8_t buf[PS_WIRE_HDR_SIZE + 8];
    memset(buf, 0xee, sizeof buf);
    ps_hdr_t h = push_hdr();
    ps_wire_encode(&h, buf);
    assert_memory_equal(buf, push_bytes, PS_WIRE_HDR_SIZE);
    /* Exactly 64 bytes written, nothing past them. */
    for (size_t i = PS_WIRE_HDR_SIZE; i < sizeof buf; i++) {
        assert_int_equal(buf[i], 0xee);
    }
}

static void test_decode_fixed_bytes(void **state)
{
    (void)state;
    ps_hdr_t got, want = push_hdr();
    assert_int_equal(decode_copy(&got, push_bytes, sizeof push_bytes, 1024), 0);
    assert_hdr_equal(&got, &want);
}

static void test_hdr_defaults(void **state)
{
    (void)state;
    ps_hdr_t h = ps_wire_hdr(PS_MSG_ACK, 9);
    assert_int_equal(h.magic, PS_WIRE_MAGIC);
    assert_int_equal(h.version, PS_WIRE_VERSION);
    assert_int_equal(h.type, PS_MSG_ACK);
    assert_int_equal(h.sender, 9);
    assert_int_equal(h.flags, 0);
    assert_int_equal(h.request, 0);
    assert_true(h.step == 0 && h.offset == 0 && h.payload == 0);
    assert_int_equal(h.chunk, 0);
    assert_int_equal(h.reserved, 0);
    assert_int_equal(h.count, 0);
    assert_int_equal(h.samples, 0);
}

/* A valid header of every type, with every free field non-zero. */
static ps_hdr_t valid_hdr(int type, size_t *payload)
{
    ps_hdr_t h = ps_wire_hdr((ps_msg_type_t)type, 1000 + (uint32_t)type);
    h.request = 77 + (uint32_t)type;
    h.step = 0x100000000ull + (uint64_t)type;
    h.chunk = 5;
    h.offset = 5 * 1024;
    h.samples = 64;
    h.base = 0x200000000ull + (uint64_t)type;
    switch (type) {
    case PS_MSG_INIT:
    case PS_MSG_PUSH:
    case PS_MSG_PULL_REPLY:
        h.count = 3;
        h.payload = 12;
        break;
    case PS_MSG_ROWS_PUSH: /* 3 keys of dim 2: 3 x 8 + 3 x 2 x 4 */
        h.offset = 2;
        h.count = 3;
        h.payload = 48;
        break;
    case PS_MSG_ROWS_PULL:
        h.offset = 2;
        h.count = 3;
        h.payload = 24;
        break;
    case PS_MSG_ROWS_REPLY:
        h.offset = 2;
        h.count = 3;
        h.payload = 24;
        break;
    case PS_MSG_TABLES: h.payload = 4; break;
    case PS_MSG_REGISTER: h.payload = 100; break;
    case PS_MSG_ERROR: h.payload = 10; break;
    case PS_MSG_STATS_REPLY: h.payload = PS_WIRE_STATS_BYTES; break;
    default: break;
    }
    *payload = (size_t)h.payload;
    return h;
}

static void test_round_trip_every_type(void **state)
{
    (void)state;
    for (int t = 1; t <= PS_MSG_TYPE_MAX; t++) {
        size_t pl;
        ps_hdr_t h = valid_hdr(t, &pl);
        expect_accept_hdr(&h, pl);
    }
}

static void test_type_names(void **state)
{
    (void)state;
    const char *want[] = {"?",           "REGISTER",  "INIT",       "ACK",        "ERROR",
                          "PUSH",        "PULL",      "PULL_REPLY", "SHUTDOWN",   "STATS",
                          "STATS_REPLY", "ROWS_PUSH", "ROWS_PULL",  "ROWS_REPLY", "TABLES"};
    assert_int_equal(PS_MSG_TYPE_MAX + 1, (int)(sizeof want / sizeof want[0]));
    for (int t = 1; t <= PS_MSG_TYPE_MAX; t++) {
        assert_string_equal(ps_wire_type_name(t), want[t]);
    }
    assert_string_equal(ps_wire_type_name(0), "?");
    assert_string_equal(ps_wire_type_name(PS_MSG_TYPE_MAX + 1), "?");
    assert_string_equal(ps_wire_type_name(-1), "?");
    assert_string_equal(ps_wire_type_name(255), "?");
}

static void test_reject_length(void **state)
{
    (void)state;
    uint8_t longer[PS_WIRE_HDR_SIZE + 1];
    memcpy(longer, push_bytes, PS_WIRE_HDR_SIZE);
    longer[PS_WIRE_HDR_SIZE] = 0;
    expect_reject(push_bytes, 55, 1024, "55");
    expect_reject(longer, 57, 1024, "57");
}

/* Every prefix of a valid header is refused (and read within bounds). */
static void test_reject_every_truncation(void **state)
{
    (void)state;
    for (size_t len = 0; len < PS_WIRE_HDR_SIZE; len++) {
        expect_reject(push_bytes, len, 1024, NULL);
    }
}

static void test_reject_bad_magic(void **state)
{
    (void)state;
    for (int i = 0; i < 4; i++) {
        uint8_t buf[PS_WIRE_HDR_SIZE];
        memcpy(buf, push_bytes, sizeof buf);
        buf[i] ^= 0x20; /* "psMQ"-style near misses */
        expect_reject(buf, sizeof buf, 1024, "magic");
    }
    /* The magic in the wrong byte order. */
    uint8_t buf[PS_WIRE_HDR_SIZE];
    memcpy(buf, push_bytes, sizeof buf);
    buf[0] = 0x51, buf[1] = 0x4d, buf[2] = 0x53, buf[3] = 0x50;
    expect_reject(buf, sizeof buf, 1024, "magic");
}

static void test_reject_other_version(void **state)
{
    (void)state;
    const unsigned versions[] = {0, PS_WIRE_VERSION + 1, 515, 0xffff};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        ps_hdr_t h = push_hdr();
        h.version = (uint16_t)versions[i];
        expect_reject_hdr(&h, 1024, "version");
        const char *msg = ps_error_msg();
        if (!has_number(msg, versions[i]) || !has_number(msg, PS_WIRE_VERSION)) {
            fail_msg("'%s' must name both versions (%u and %d)", msg, versions[i], PS_WIRE_VERSION);
        }
    }
}

static void test_reject_unknown_type(void **state)
{
    (void)state;
    const int types[] = {0, PS_MSG_TYPE_MAX + 1, 15, 128, 255};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        ps_hdr_t h = ps_wire_hdr(PS_MSG_ACK, 1);
        h.type = (uint8_t)types[i];
        expect_reject_hdr(&h, 0, "type");
    }
}

static void test_reject_flags(void **state)
{
    (void)state;
    /* PUSH defines bits 0-2 (SKIP, F16, BF16); every other bit, and any
     * bit on another type, is refused. */
    for (int bit = 3; bit < 8; bit++) {
        ps_hdr_t h = push_hdr();
        h.flags = (uint8_t)(1u << bit);
        expect_reject_hdr(&h, 1024, NULL);
    }
    ps_hdr_t h = push_hdr();
    h.flags = PS_FLAG_SKIP;
    expect_accept_hdr(&h, 1024);
    /* 16-bit pushes: count x 2 bytes, and only one format at a time. */
    h.flags = PS_FLAG_F16;
    expect_reject_hdr(&h, 1024, NULL);
    h.payload = 512;
    expect_accept_hdr(&h, 512);
    h.flags = PS_FLAG_BF16 | PS_FLAG_SKIP;
    expect_accept_hdr(&h, 512);
    h.flags = PS_FLAG_F16 | PS_FLAG_BF16;
    expect_reject_hdr(&h, 512, NULL);
    for (int t = 1; t <= PS_MSG_TYPE_MAX; t++) {
        size_t pl;
        ps_hdr_t o = valid_hdr(t, &pl);
        o.flags = PS_FLAG_SKIP;
        if (t != PS_MSG_PUSH && t != PS_MSG_ROWS_PUSH) {
            expect_reject_hdr(&o, pl, NULL);
        }
    }
    /* ROWS_PUSH takes SKIP only: its rows are never 16-bit. */
    size_t pl;
    ps_hdr_t r = valid_hdr(PS_MSG_ROWS_PUSH, &pl);
    r.flags = PS_FLAG_SKIP;
    expect_accept_hdr(&r, pl);
    r.flags = PS_FLAG_F16;
    expect_reject_hdr(&r, pl, NULL);
}

/* Row messages: payload = keys x 8 (+ keys x dim x 4), dim 1..65536, and
 * only a push may carry no keys.  Values computed by hand. */
static void test_rows_lengths(void **state)
{
    (void)state;
    size_t pl;
    ps_hdr_t h = valid_hdr(PS_MSG_ROWS_PUSH, &pl);
    h.count = 0;
    h.payload = 0;
    expect_accept_hdr(&h, 0); /* an empty push: sync still needs it */
    h.count = 2;
    h.offset = 65536;
    h.payload = 2 * 8 + 2 * 65536 * 4;
    expect_accept_hdr(&h, (size_t)h.payload);
    h.offset = 65537;
    h.payload = 2 * 8 + 2 * 65537 * 4;
    expect_reject_hdr(&h, (size_t)h.payload, NULL);
    h.offset = 0;
    h.payload = 16;
    expect_reject_hdr(&h, 16, NULL);
    /* A count so large the product would overflow 32 bits. */
    h.offset = 65536;
    h.count = 0xffffffffu;
    h.payload = 0xffffffffull * 8 + 0xffffffffull * 65536 * 4;
    expect_reject_hdr(&h, 100, NULL);
    h = valid_hdr(PS_MSG_ROWS_PUSH, &pl);
    expect_reject_hdr(&h, pl - 4, NULL); /* one float short */
    h.payload = pl - 4;
    expect_reject_hdr(&h, pl - 4, NULL);
    h = valid_hdr(PS_MSG_ROWS_PULL, &pl);
    h.count = 0;
    h.payload = 0;
    expect_reject_hdr(&h, 0, NULL);
    h = valid_hdr(PS_MSG_ROWS_PULL, &pl);
    h.payload = 24 + 8 * 3 * 2; /* a pull carries no rows */
    expect_reject_hdr(&h, (size_t)h.payload, NULL);
    h = valid_hdr(PS_MSG_ROWS_REPLY, &pl);
    h.payload = 48;
    expect_reject_hdr(&h, 48, NULL);
    h = valid_hdr(PS_MSG_TABLES, &pl);
    h.payload = 3;
    expect_reject_hdr(&h, 3, NULL);
    h.payload = PS_WIRE_MAX_TABLES + 1;
    expect_reject_hdr(&h, PS_WIRE_MAX_TABLES + 1, NULL);
    h.payload = 8;
    h.count = 1;
    expect_reject_hdr(&h, 8, NULL);
}

static void test_reject_reserved(void **state)
{
    (void)state;
    /* One non-zero byte anywhere in the reserved word, written raw. */
    for (int i = 28; i < 32; i++) {
        uint8_t buf[PS_WIRE_HDR_SIZE];
        memcpy(buf, push_bytes, sizeof buf);
        buf[i] = 0x01;
        expect_reject(buf, sizeof buf, 1024, NULL);
    }
}

static void test_reject_payload_mismatch(void **state)
{
    (void)state;
    for (int t = 1; t <= PS_MSG_TYPE_MAX; t++) {
        size_t pl;
        ps_hdr_t h = valid_hdr(t, &pl);
        expect_reject_hdr(&h, pl + 1, NULL);
        if (pl > 0) {
            expect_reject_hdr(&h, pl - 1, NULL);
            expect_reject_hdr(&h, 0, NULL);
        }
    }
}

static void test_reject_push_counts(void **state)
{
    (void)state;
    ps_hdr_t h = push_hdr();
    h.count = 0; /* an empty push */
    h.payload = 0;
    expect_reject_hdr(&h, 0, NULL);
    h = push_hdr();
    h.payload = 1020; /* count 256 needs 1024 bytes, frame agrees with header */
    expect_reject_hdr(&h, 1020, NULL);
    h.payload = 1028;
    expect_reject_hdr(&h, 1028, NULL);
    /* count * 4 must not wrap in 32 bits: 0x40000001 * 4 = 4 mod 2^32. */
    h.count = 0x40000001u;
    h.payload = 4;
    expect_reject_hdr(&h, 4, NULL);
    /* The same rule for the other float-carrying types. */
    h = ps_wire_hdr(PS_MSG_INIT, 0);
    h.count = 2;
    h.payload = 4;
    expect_reject_hdr(&h, 4, NULL);
    h = ps_wire_hdr(PS_MSG_PULL_REPLY, 0);
    h.payload = 0;
    expect_reject_hdr(&h, 0, NULL);
}

static void test_register_limits(void **state)
{
    (void)state;
    ps_hdr_t h = ps_wire_hdr(PS_MSG_REGISTER, 0);
    h.payload = PS_WIRE_MAX_LAYOUT;
    expect_accept_hdr(&h, PS_WIRE_MAX_LAYOUT);
    h.payload = PS_WIRE_MAX_LAYOUT + 1;
    expect_reject_hdr(&h, PS_WIRE_MAX_LAYOUT + 1, NULL);
    h.payload = UINT64_MAX;
    expect_reject_hdr(&h, SIZE_MAX, NULL);
    /* A layout is at least its u32 tensor count. */
    h.payload = 3;
    expect_reject_hdr(&h, 3, NULL);
    h.payload = 0;
    expect_reject_hdr(&h, 0, NULL);
    /* The layout is not a float array: count must be 0. */
    h.payload = 100;
    h.count = 25;
    expect_reject_hdr(&h, 100, NULL);
}

static void test_error_limits(void **state)
{
    (void)state;
    ps_hdr_t h = ps_wire_hdr(PS_MSG_ERROR, 0);
    h.payload = PS_WIRE_MAX_TEXT;
    expect_accept_hdr(&h, PS_WIRE_MAX_TEXT);
    h.payload = PS_WIRE_MAX_TEXT + 1;
    expect_reject_hdr(&h, PS_WIRE_MAX_TEXT + 1, NULL);
    h.payload = 8;
    h.count = 2;
    expect_reject_hdr(&h, 8, NULL);
}

static void test_reject_payload_on_empty_types(void **state)
{
    (void)state;
    const int types[] = {PS_MSG_PULL, PS_MSG_ACK, PS_MSG_SHUTDOWN};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        ps_hdr_t h = ps_wire_hdr((ps_msg_type_t)types[i], 0);
        h.payload = 4;
        expect_reject_hdr(&h, 4, NULL);
        h.payload = 0;
        h.count = 1;
        expect_reject_hdr(&h, 0, NULL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_fixed_bytes),
        cmocka_unit_test(test_decode_fixed_bytes),
        cmocka_unit_test(test_hdr_defaults),
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_reject_length),
        cmocka_unit_test(test_reject_every_truncation),
        cmocka_unit_test(test_reject_bad_magic),
        cmocka_unit_test(test_reject_other_version),
        cmocka_unit_test(test_reject_unknown_type),
        cmocka_unit_test(test_reject_flags),
        cmocka_unit_test(test_rows_lengths),
        cmocka_unit_test(test_reject_reserved),
        cmocka_unit_test(test_reject_payload_mismatch),
        cmocka_unit_test(test_reject_push_counts),
        cmocka_unit_test(test_register_limits),
        cmocka_unit_test(test_error_limits),
        cmocka_unit_test(test_reject_payload_on_empty_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
