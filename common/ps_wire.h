/*
 * ps_wire: the data-plane message header, encoded field by field.
 *
 * Every message on the data port is two frames: frame 0 is this fixed
 * 56-byte little-endian header, frame 1 the payload (possibly empty).
 *
 *   off size field
 *     0  4   magic          "PSMQ" (0x514d5350)
 *     4  2   version        PS_WIRE_VERSION; a mismatch is refused
 *     6  1   type           ps_msg_type_t
 *     7  1   flags          must be 0 in this version
 *     8  4   sender         world-independent role rank of the sender
 *    12  4   request id     echoed in replies
 *    16  8   step           training step (weights version)
 *    24  4   chunk id       index into the chunk map
 *    28  4   reserved       must be 0
 *    32  8   offset         first element of the chunk in the flat space
 *    40  4   count          elements in the payload (float32)
 *    44  4   samples        PUSH: samples behind the gradient
 *    48  8   payload bytes  length of frame 1
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
#define PS_WIRE_VERSION 1
#define PS_WIRE_HDR_SIZE 56
#define PS_WIRE_MAX_TEXT 1024          /* ERROR payloads */
#define PS_WIRE_MAX_LAYOUT (64 * 1024) /* REGISTER payloads */

typedef enum {
    PS_MSG_REGISTER = 1,   /* worker 0 -> server: the layout (payload) */
    PS_MSG_INIT = 2,       /* worker 0 -> server: initial values of one chunk */
    PS_MSG_ACK = 3,        /* server -> worker: request done */
    PS_MSG_ERROR = 4,      /* server -> worker: request refused, text payload */
    PS_MSG_PUSH = 5,       /* worker -> server: mean gradient of one chunk */
    PS_MSG_PULL = 6,       /* worker -> server: want chunk at version >= step */
    PS_MSG_PULL_REPLY = 7, /* server -> worker: chunk weights at version step */
    PS_MSG_SHUTDOWN = 8,   /* worker -> server: this worker has finished */
    PS_MSG_TYPE_MAX = 8,
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
} ps_hdr_t;

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

#endif
