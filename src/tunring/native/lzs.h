/*
 * LZS (ANSI X3.241, as RFC 1974 and OpenConnect use it): the kernels behind the LZS functions
 * of tunring.proto.compress, which are the specification.  Plain C, no Python.
 */
#ifndef TUNRING_LZS_H
#define TUNRING_LZS_H

#include <stddef.h>
#include <stdint.h>

#define TR_LZS_MAX_OFFSET 2047

/* Why tr_lzs_decompress refused a packet, with what the message needs. */
enum tr_lzs_status {
    TR_LZS_OK = 0,
    TR_LZS_NO_END,      /* ends without an end marker */
    TR_LZS_END_CUT,     /* ends inside the end marker */
    TR_LZS_TRAILING,    /* `count` bytes after the end marker */
    TR_LZS_EXCEEDS,     /* output over `cap` */
    TR_LZS_OFFSET_ZERO, /* an 11-bit offset of 0 */
    TR_LZS_TOO_FAR,     /* a match `offset` back with only `count` bytes output */
};

struct tr_lzs_error {
    size_t offset, count;
};

/*
 * Decompress src[0:len] into dst[0:cap] (compress.lzs_decompress_into) and set *out_len.
 * The packet is checked whole before anything is written, so on an error dst is untouched;
 * on success only dst[0:*out_len] is written.
 */
enum tr_lzs_status tr_lzs_decompress(const uint8_t *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len,
                                     struct tr_lzs_error *err);

/* The most bytes tr_lzs_compress writes for `len` input bytes (all literals, the end marker). */
size_t tr_lzs_compress_bound(size_t len);

/*
 * Compress src[0:len] into dst (room for tr_lzs_compress_bound(len)) as compress.lzs_compress
 * does, byte for byte: greedy longest match in the 2047-byte history, the nearest of equals.
 * Returns the bytes written, or 0 if the work memory could not be allocated.
 */
size_t tr_lzs_compress(const uint8_t *src, size_t len, uint8_t *dst);

#endif
