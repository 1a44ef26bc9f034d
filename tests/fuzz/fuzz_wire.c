/*
 * libFuzzer target: the data-plane decoders (common/ps_wire.h and the
 * REGISTER payload decoder in common/ps_layout.h).
 *
 * An input is one message as the server receives it: the first 64 bytes
 * are frame 0 (the header), the rest frame 1 (the payload).  Shorter inputs
 * are a short frame 0 with an empty payload.  Invariants on success:
 *   - re-encoding the decoded header gives the same 64 bytes;
 *   - the payload length is the one the type requires;
 *   - a REGISTER payload that decodes re-encodes to the same bytes and
 *     describes a consistent layout (offsets end to end, names found);
 *   - a STATS_REPLY payload round-trips through decode and encode.
 *   - row messages (ROWS_PUSH/PULL/REPLY): dim 1..PS_WIRE_MAX_DIM and the
 *     payload exactly keys x 8 (+ keys x dim x 4), only a push keyless;
 *   - a TABLES payload (common/ps_keys.h) that decodes re-encodes to the
 *     same bytes, with 1..PS_TABLES_MAX valid, uniquely named tables.
 * Every payload is also fed to ps_layout_decode and ps_tables_decode
 * directly, so the payload decoders are fuzzed without the fuzzer first
 * having to find a valid header.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_util.h"
#include "ps_keys.h"
#include "ps_layout.h"
#include "ps_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A decoded layout is consistent and re-encodes to the bytes it came from. */
static void check_layout(const uint8_t *p, size_t len)
{
    ps_layout_t l;
    if (ps_layout_decode(&l, p, len) != 0) {
        FZ_CHECK(l.n == 0 && l.total == 0); /* reset on failure */
        return;
    }
    FZ_CHECK(l.n >= 0 && l.n <= PS_MAX_TENSORS);
    size_t at = 0;
    for (int i = 0; i < l.n; i++) {
        const ps_tensor_t *t = &l.t[i];
        size_t numel = 1;
        FZ_CHECK(t->ndim >= 1 && t->ndim <= PS_MAX_DIMS);
        for (int d = 0; d < t->ndim; d++) {
            FZ_CHECK(t->dims[d] >= 1);
            numel *= (size_t)t->dims[d];
        }
        FZ_CHECK(t->numel == numel && t->offset == at);
        FZ_CHECK(ps_layout_find(&l, t->name) == i);
        at += numel;
    }
    FZ_CHECK(l.total == at && l.total <= PS_MAX_ELEMS);
    static uint8_t again[PS_WIRE_MAX_LAYOUT];
    long n = ps_layout_encode(&l, again, sizeof again);
    /* Canonical form: no two byte strings decode to the same layout. */
    FZ_CHECK(n >= 0 && (size_t)n == len);
    FZ_CHECK(memcmp(again, p, len) == 0);
    char text[256];
    ps_layout_describe(&l, text, sizeof text);
    FZ_CHECK(strlen(text) < sizeof text);
    (void)ps_layout_hash(&l);
}

/* A decoded TABLES payload is valid and re-encodes to its bytes. */
static void check_tables(const uint8_t *p, size_t len)
{
    static ps_tables_t ts;
    if (ps_tables_decode(&ts, p, len) != 0) {
        FZ_CHECK(ts.n == 0 && ps_error_msg()[0] != '\0');
        return;
    }
    FZ_CHECK(ts.n >= 0 && ts.n <= PS_TABLES_MAX);
    for (int i = 0; i < ts.n; i++) {
        const ps_table_decl_t *t = &ts.t[i];
        FZ_CHECK(t->dim >= 1 && t->dim <= PS_TABLE_MAX_DIM);
        FZ_CHECK(t->init == PS_TABLE_INIT_ZEROS || t->init == PS_TABLE_INIT_UNIFORM);
        FZ_CHECK(strlen(t->name) >= 1 && ps_tables_find(&ts, t->name) == i);
    }
    size_t n = ps_tables_size(&ts);
    static uint8_t again[PS_WIRE_MAX_TABLES + 4 * PS_TABLES_MAX * 128];
    FZ_CHECK(n == len && n <= sizeof again);
    ps_tables_encode(&ts, again);
    FZ_CHECK(memcmp(again, p, len) == 0);
    (void)ps_tables_hash(&ts);
}

/* Row messages: keys x 8 (push: + keys x dim x 4; reply: keys x dim x 4). */
static void check_rows(const ps_hdr_t *h, size_t payload_len)
{
    uint64_t n = h->count, dim = h->offset;
    FZ_CHECK(dim >= 1 && dim <= PS_WIRE_MAX_DIM);
    if (h->type == PS_MSG_ROWS_PUSH) {
        FZ_CHECK(payload_len == n * 8 + n * dim * 4);
    } else if (h->type == PS_MSG_ROWS_PULL) {
        FZ_CHECK(n > 0 && payload_len == n * 8);
    } else {
        FZ_CHECK(n > 0 && payload_len == n * dim * 4);
    }
}

static int is_rows(int type)
{
    return type == PS_MSG_ROWS_PUSH || type == PS_MSG_ROWS_PULL || type == PS_MSG_ROWS_REPLY;
}

static void check_header(const ps_hdr_t *h, const uint8_t *frame0, size_t payload_len)
{
    uint8_t again[PS_WIRE_HDR_SIZE];
    ps_wire_encode(h, again);
    FZ_CHECK(memcmp(again, frame0, PS_WIRE_HDR_SIZE) == 0);
    FZ_CHECK(h->magic == PS_WIRE_MAGIC && h->version == PS_WIRE_VERSION);
    FZ_CHECK(h->type >= 1 && h->type <= PS_MSG_TYPE_MAX);
    FZ_CHECK(strcmp(ps_wire_type_name(h->type), "?") != 0);
    unsigned allowed = h->type == PS_MSG_PUSH        ? PS_FLAG_SKIP | PS_FLAG_HALF
                       : h->type == PS_MSG_ROWS_PUSH ? PS_FLAG_SKIP
                                                     : 0;
    FZ_CHECK((h->flags & ~allowed) == 0 && h->reserved == 0 && h->payload == payload_len);
    FZ_CHECK((h->flags & PS_FLAG_HALF) != PS_FLAG_HALF);
    size_t elem = (h->flags & PS_FLAG_HALF) ? 2 : 4; /* --compress pushes: 16-bit */
    if (h->type == PS_MSG_INIT || h->type == PS_MSG_PUSH || h->type == PS_MSG_PULL_REPLY) {
        FZ_CHECK(h->count > 0 && payload_len == (size_t)h->count * elem);
    } else if (is_rows(h->type)) {
        check_rows(h, payload_len);
    } else {
        FZ_CHECK(h->count == 0);
    }
    if (h->type == PS_MSG_REGISTER) {
        FZ_CHECK(payload_len >= 4 && payload_len <= PS_WIRE_MAX_LAYOUT);
    }
    if (h->type == PS_MSG_TABLES) {
        FZ_CHECK(payload_len >= 4 && payload_len <= PS_WIRE_MAX_TABLES);
    }
}

static void check_stats(const uint8_t *p)
{
    ps_wire_stats_t st;
    uint8_t again[PS_WIRE_STATS_BYTES];
    ps_wire_stats_decode(&st, p);
    ps_wire_stats_encode(&st, again);
    FZ_CHECK(memcmp(again, p, PS_WIRE_STATS_BYTES) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t hlen = size < PS_WIRE_HDR_SIZE ? size : PS_WIRE_HDR_SIZE;
    const uint8_t *payload = data + hlen;
    size_t plen = size - hlen;
    ps_hdr_t h;
    (void)ps_wire_type_name(size > 6 ? data[6] : -1);
    if (ps_wire_decode(&h, data, hlen, plen) == 0) {
        FZ_CHECK(hlen == PS_WIRE_HDR_SIZE);
        check_header(&h, data, plen);
        if (h.type == PS_MSG_STATS_REPLY) {
            check_stats(payload);
        }
    } else {
        FZ_CHECK(ps_error_msg()[0] != '\0');
    }
    if (plen == PS_WIRE_STATS_BYTES) {
        check_stats(payload);
    }
    if (plen <= PS_WIRE_MAX_LAYOUT) {
        check_layout(payload, plen);
    }
    if (plen <= PS_WIRE_MAX_TABLES) {
        check_tables(payload, plen);
    }
    return 0;
}
