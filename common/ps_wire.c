#include "ps_wire.h"

#include "ps_bytes.h"
#include "ps_err.h"

#include <string.h>

ps_hdr_t ps_wire_hdr(ps_msg_type_t type, uint32_t sender)
{
    ps_hdr_t h;
    memset(&h, 0, sizeof h);
    h.magic = PS_WIRE_MAGIC;
    h.version = PS_WIRE_VERSION;
    h.type = (uint8_t)type;
    h.sender = sender;
    return h;
}

void ps_wire_encode(const ps_hdr_t *h, uint8_t *buf)
{
    ps_put_u32(buf + 0, h->magic);
    ps_put_u16(buf + 4, h->version);
    buf[6] = h->type;
    buf[7] = h->flags;
    ps_put_u32(buf + 8, h->sender);
    ps_put_u32(buf + 12, h->request);
    ps_put_u64(buf + 16, h->step);
    ps_put_u32(buf + 24, h->chunk);
    ps_put_u32(buf + 28, h->reserved);
    ps_put_u64(buf + 32, h->offset);
    ps_put_u32(buf + 40, h->count);
    ps_put_u32(buf + 44, h->samples);
    ps_put_u64(buf + 48, h->payload);
    ps_put_u64(buf + 56, h->base);
}

const char *ps_wire_type_name(int type)
{
    static const char *names[] = {"?",           "REGISTER",  "INIT",       "ACK",        "ERROR",
                                  "PUSH",        "PULL",      "PULL_REPLY", "SHUTDOWN",   "STATS",
                                  "STATS_REPLY", "ROWS_PUSH", "ROWS_PULL",  "ROWS_REPLY", "TABLES"};
    if (type < 1 || type > PS_MSG_TYPE_MAX) {
        return names[0];
    }
    return names[type];
}

/* Row messages: count keys of `offset` (the dim) floats each.  64-bit
 * arithmetic cannot overflow: count < 2^32, dim <= 2^16. */
static int rows_ok(const ps_hdr_t *h)
{
    uint64_t n = h->count, dim = h->offset;
    if (dim < 1 || dim > PS_WIRE_MAX_DIM) {
        return 0;
    }
    switch (h->type) {
    case PS_MSG_ROWS_PUSH: return h->payload == n * 8 + n * dim * 4;
    case PS_MSG_ROWS_PULL: return n > 0 && h->payload == n * 8;
    default: return n > 0 && h->payload == n * dim * 4; /* ROWS_REPLY */
    }
}

/* The payload each type must carry, given its element count. */
static int payload_ok(const ps_hdr_t *h)
{
    switch (h->type) {
    case PS_MSG_ROWS_PUSH:
    case PS_MSG_ROWS_PULL:
    case PS_MSG_ROWS_REPLY: return rows_ok(h);
    case PS_MSG_TABLES: return h->payload >= 4 && h->payload <= PS_WIRE_MAX_TABLES && h->count == 0;
    case PS_MSG_PUSH:
        if ((h->flags & PS_FLAG_HALF) == PS_FLAG_HALF) {
            return 0; /* one 16-bit format or the other */
        }
        return h->count > 0 &&
               h->payload == (uint64_t)h->count * ((h->flags & PS_FLAG_HALF) ? 2 : 4);
    case PS_MSG_INIT:
    case PS_MSG_PULL_REPLY: return h->count > 0 && h->payload == (uint64_t)h->count * 4;
    case PS_MSG_REGISTER:
        return h->payload >= 4 && h->payload <= PS_WIRE_MAX_LAYOUT && h->count == 0;
    case PS_MSG_ERROR: return h->payload <= PS_WIRE_MAX_TEXT && h->count == 0;
    case PS_MSG_STATS_REPLY: return h->payload == PS_WIRE_STATS_BYTES && h->count == 0;
    default: return h->payload == 0 && h->count == 0;
    }
}

static void decode_fields(ps_hdr_t *h, const uint8_t *buf)
{
    h->magic = ps_get_u32(buf + 0);
    h->version = ps_get_u16(buf + 4);
    h->type = buf[6];
    h->flags = buf[7];
    h->sender = ps_get_u32(buf + 8);
    h->request = ps_get_u32(buf + 12);
    h->step = ps_get_u64(buf + 16);
    h->chunk = ps_get_u32(buf + 24);
    h->reserved = ps_get_u32(buf + 28);
    h->offset = ps_get_u64(buf + 32);
    h->count = ps_get_u32(buf + 40);
    h->samples = ps_get_u32(buf + 44);
    h->payload = ps_get_u64(buf + 48);
    h->base = ps_get_u64(buf + 56);
}

int ps_wire_decode(ps_hdr_t *h, const uint8_t *buf, size_t len, size_t payload_len)
{
    if (len != PS_WIRE_HDR_SIZE) {
        ps_error_set("header of %zu bytes (want %d)", len, PS_WIRE_HDR_SIZE);
        return PS_EPROTO;
    }
    decode_fields(h, buf);
    if (h->magic != PS_WIRE_MAGIC) {
        ps_error_set("bad magic 0x%08x", h->magic);
        return PS_EPROTO;
    }
    if (h->version != PS_WIRE_VERSION) {
        ps_error_set("protocol version %u, this build speaks %d", h->version, PS_WIRE_VERSION);
        return PS_EPROTO;
    }
    if (h->type < 1 || h->type > PS_MSG_TYPE_MAX) {
        ps_error_set("unknown message type %u", h->type);
        return PS_EPROTO;
    }
    uint8_t allowed = h->type == PS_MSG_PUSH        ? PS_FLAG_SKIP | PS_FLAG_HALF
                      : h->type == PS_MSG_ROWS_PUSH ? PS_FLAG_SKIP
                                                    : 0;
    if ((h->flags & ~allowed) != 0 || h->reserved != 0) {
        ps_error_set("%s: non-zero flags/reserved fields", ps_wire_type_name(h->type));
        return PS_EPROTO;
    }
    if (!payload_ok(h)) {
        ps_error_set("%s: bad count %u / payload %llu", ps_wire_type_name(h->type), h->count,
                     (unsigned long long)h->payload);
        return PS_EPROTO;
    }
    if (h->payload != payload_len) {
        ps_error_set("%s: header says %llu payload bytes, frame has %zu",
                     ps_wire_type_name(h->type), (unsigned long long)h->payload, payload_len);
        return PS_EPROTO;
    }
    return 0;
}

void ps_wire_stats_encode(const ps_wire_stats_t *st, uint8_t *buf)
{
    ps_put_u64(buf + 0, st->staleness_max);
    ps_put_u64(buf + 8, st->staleness_sum);
    ps_put_u64(buf + 16, st->applied);
    ps_put_u64(buf + 24, st->rejected);
    ps_put_u64(buf + 32, st->version);
    ps_put_u64(buf + 40, st->apply_us);
}

void ps_wire_stats_decode(ps_wire_stats_t *st, const uint8_t *buf)
{
    st->staleness_max = ps_get_u64(buf + 0);
    st->staleness_sum = ps_get_u64(buf + 8);
    st->applied = ps_get_u64(buf + 16);
    st->rejected = ps_get_u64(buf + 24);
    st->version = ps_get_u64(buf + 32);
    st->apply_us = ps_get_u64(buf + 40);
}
