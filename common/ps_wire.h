/*
 * ps_wire: the data-plane message header, encoded field by field.
 *
 * Every message on the data port is two frames: frame 0 is this fixed
 * 64-byte little-endian header, frame 1 the payload (possibly empty).
 *
 *   off size field
 *     0  4   magic          "PSMQ" (0x514d5350)
 *     4  2   version        PS_WIRE_VERSION; a mismatch is refused
 *     6  1   type           ps_msg_type_t
 *     7  1   flags          PUSH: PS_FLAG_SKIP, PS_FLAG_F16 or PS_FLAG_BF16;
 *                           ROWS_PUSH: PS_FLAG_SKIP; others: 0
 *     8  4   sender         world-independent role rank of the sender
 *    12  4   request id     echoed in replies
 *    16  8   step           training step (weights version)
 *    24  4   chunk id       index into the chunk map
 *    28  4   reserved       must be 0
 *    32  8   offset         first element of the chunk in the flat space
 *    40  4   count          elements in the payload (float32)
 *    44  4   samples        PUSH: samples behind the gradient
 *    48  8   payload bytes  length of frame 1
 *    56  8   base           PUSH: weights version the gradient was computed on
 *
 * Row messages (sparse tables) use the same header: chunk id = table id
 * (declaration order), offset = the table's dim, count = keys; payloads:
 * ROWS_PUSH count u64 keys then count x dim float32 gradients, ROWS_PULL
 * count u64 keys, ROWS_REPLY count x dim float32 rows, all little-endian.
 *
 * ps_wire_decode checks everything that can be checked without the layout:
 * magic, version, type, flags, reserved, and that the payload length is the
 * one the type requires.  Checks against the layout and the chunk map (chunk
 * id, offset, count, step window) belong to the receiver.
 */
#ifndef PS_WIRE_H
#define PS_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define PS_WIRE_MAGIC 0x514d5350u
#define PS_WIRE_VERSION 5
#define PS_WIRE_HDR_SIZE 64
#define PS_WIRE_MAX_TEXT 1024           /* ERROR payloads */
#define PS_WIRE_MAX_LAYOUT (128 * 1024) /* REGISTER payloads: PS_MAX_TENSORS of any shape */
#define PS_WIRE_MAX_TABLES 8192         /* TABLES payloads: PS_TABLES_MAX declarations */
#define PS_WIRE_MAX_DIM 65536           /* row messages: floats per row (PS_TABLE_MAX_DIM) */
#define PS_WIRE_STATS_BYTES 48          /* STATS_REPLY: 6 x u64, see ps_wire_stats_t */
/* PUSH flag: the worker's gradient for this step was not finite and
 * --on-nonfinite skip is on; the payload is ignored and the whole step is
 * dropped for everyone. */
#define PS_FLAG_SKIP 0x01
/* PUSH flags: the payload is count x 2 bytes of IEEE binary16 (F16) or
 * bfloat16 (BF16) instead of float32 (--compress); at most one of them. */
#define PS_FLAG_F16 0x02
#define PS_FLAG_BF16 0x04
#define PS_FLAG_HALF (PS_FLAG_F16 | PS_FLAG_BF16)

typedef enum {
    PS_MSG_REGISTER = 1,     /* worker 0 -> server: the layout (payload) */
    PS_MSG_INIT = 2,         /* worker 0 -> server: initial values of one chunk */
    PS_MSG_ACK = 3,          /* server -> worker: request done */
    PS_MSG_ERROR = 4,        /* server -> worker: request refused, text payload */
    PS_MSG_PUSH = 5,         /* worker -> server: mean gradient of one chunk */
    PS_MSG_PULL = 6,         /* worker -> server: want chunk at version >= step */
    PS_MSG_PULL_REPLY = 7,   /* server -> worker: chunk weights at version step */
    PS_MSG_SHUTDOWN = 8,     /* worker -> server: this worker has finished */
    PS_MSG_STATS = 9,        /* worker -> server: ask for the server's counters */
    PS_MSG_STATS_REPLY = 10, /* server -> worker: ps_wire_stats_t payload */
    PS_MSG_ROWS_PUSH = 11,   /* worker -> server: one step's rows of one table */
    PS_MSG_ROWS_PULL = 12,   /* worker -> server: want rows at table version >= step */
    PS_MSG_ROWS_REPLY = 13,  /* server -> worker: the rows, in the pull's key order */
    PS_MSG_TABLES = 14,      /* worker 0 -> server: the table declarations (ps_keys.h) */
    PS_MSG_TYPE_MAX = 14,
} ps_msg_type_t;

typedef struct {
    uint32_t magic;
    uint16_t version;
    uint8_t type;
    uint8_t flags;
    uint32_t sender;
    uint32_t request;
    uint64_t step;
    uint32_t chunk;
    uint32_t reserved;
    uint64_t offset;
    uint32_t count;
    uint32_t samples;
    uint64_t payload;
    uint64_t base;
} ps_hdr_t;

/* The STATS_REPLY payload, six little-endian u64 in this order (version 3
 * added apply_us). */
typedef struct {
    uint64_t staleness_max; /* over applied pushes: version applied to - base */
    uint64_t staleness_sum;
    uint64_t applied;  /* pushes applied */
    uint64_t rejected; /* messages dropped, all reasons */
    uint64_t version;  /* highest chunk version on this server */
    uint64_t apply_us; /* time spent applying updates, microseconds */
} ps_wire_stats_t;

/* A header with magic and version filled in and every other field zero. */
ps_hdr_t ps_wire_hdr(ps_msg_type_t type, uint32_t sender);
/* Writes exactly PS_WIRE_HDR_SIZE bytes. */
void ps_wire_encode(const ps_hdr_t *h, uint8_t *buf);
/* Decodes and validates frame 0 (`len` bytes) against the payload length
 * `payload_len` actually received.  PS_EPROTO with a detail on any
 * violation; *h is only meaningful on success. */
int ps_wire_decode(ps_hdr_t *h, const uint8_t *buf, size_t len, size_t payload_len);
/* "PUSH" etc., or "?" for unknown values. */
const char *ps_wire_type_name(int type);
void ps_wire_stats_encode(const ps_wire_stats_t *st, uint8_t *buf);
void ps_wire_stats_decode(ps_wire_stats_t *st, const uint8_t *buf);

#endif
