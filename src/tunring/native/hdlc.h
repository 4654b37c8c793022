/*
 * RFC 1662 HDLC-like framing: the kernels behind tunring.proto.rfc1662 (plain C, no Python).
 *
 * Each function mirrors the Python function of the same name in src/tunring/proto/rfc1662.py,
 * which is the specification: same results, same errors (as status codes the glue turns into
 * the same FramingError/ValueError messages).  Every read and write stays inside the buffer the
 * caller passed with its length; lengths are read once, by the caller, and passed by value.
 */
#ifndef TUNRING_HDLC_H
#define TUNRING_HDLC_H

#include <stddef.h>
#include <stdint.h>

#define TR_HDLC_FLAG 0x7E
#define TR_HDLC_ESCAPE 0x7D
#define TR_HDLC_ESCAPE_XOR 0x20
#define TR_HDLC_FCS_INIT 0xFFFF
#define TR_HDLC_FCS_GOOD 0xF0B8
#define TR_HDLC_FCS_BYTES 2
#define TR_HDLC_MIN_FRAME_BYTES 4

/* Why decode_frame refused a frame, in the order the Python reference checks. */
enum tr_hdlc_status {
    TR_HDLC_OK = 0,
    TR_HDLC_FLAG_INSIDE,      /* a 7E between the flags */
    TR_HDLC_TRAILING_ESCAPE,  /* ends with a 7D: aborted or truncated */
    TR_HDLC_TOO_SHORT,        /* under 4 bytes with the FCS (*frame_len says how many) */
    TR_HDLC_BAD_FCS,
    TR_HDLC_CHANGED,          /* buf changed between the check and the move (shared memory) */
};

/* The FCS-16 register after running `fcs` over data[0:len] (rfc1662.fcs16). */
uint16_t tr_fcs16(uint16_t fcs, const uint8_t *data, size_t len);
/* The same with tables only (tr_fcs16 folds with PCLMULQDQ where the CPU has it): for tests. */
uint16_t tr_fcs16_portable(uint16_t fcs, const uint8_t *data, size_t len);

/*
 * Un-HDLC buf[0:len] in place (rfc1662.decode_frame): drop the unescaped control characters
 * whose bit is set in rx_accm, remove the escapes, check the FCS.  On TR_HDLC_OK the frame
 * with its FCS is in buf[0:*frame_len] (the PPP frame is 2 bytes shorter); buf[*frame_len:len]
 * is as it was.  On any error buf is untouched (the frame is validated before it is moved) and
 * *frame_len is the un-escaped length.  Only shrinks: never writes at or past buf + len.
 */
enum tr_hdlc_status tr_hdlc_decode_frame(uint8_t *buf, size_t len, uint32_t rx_accm, size_t *frame_len);
/* The same without SSSE3/PCLMULQDQ, whatever the CPU has: for tests and fuzzers. */
enum tr_hdlc_status tr_hdlc_decode_frame_portable(uint8_t *buf, size_t len, uint32_t rx_accm, size_t *frame_len);

/* Bytes tr_hdlc_encode_frame writes for src[0:len] (flags included); sets *fcs to the FCS to
 * send (complemented), which tr_hdlc_encode_frame takes so that src is checksummed once. */
size_t tr_hdlc_encoded_size(const uint8_t *src, size_t len, uint32_t tx_accm, int leading_flag, uint16_t *fcs);

/*
 * Write [7E] + escaped(src + fcs) + 7E into dst[0:room] (rfc1662.encode_frame) and return the
 * bytes written: what tr_hdlc_encoded_size said, or 0, having written only inside dst, if src
 * changed since (memory shared with a peer) and no longer fits.  src and dst must not overlap
 * (the glue copies an overlapping source first).
 */
size_t tr_hdlc_encode_frame(const uint8_t *src, size_t len, uint16_t fcs, uint8_t *dst, size_t room,
                            uint32_t tx_accm, int leading_flag);

/*
 * The frames in data[0:len] (rfc1662.scan): calls span(ctx, start, end) for each complete
 * non-empty frame (flags excluded) and stops early if it returns nonzero (then returns -1).
 * Sets *rest to the offset of the last flag (len if none) and *garbage to the bytes before
 * the first flag.
 */
int tr_hdlc_scan(const uint8_t *data, size_t len, int (*span)(void *ctx, size_t start, size_t end), void *ctx,
                 size_t *rest, size_t *garbage);

#endif
