/*
 * LZ4 and CSTP deflate decompression kernels; the specification is the LZ4 and deflate parts
 * of src/tunring/proto/compress.py (over the lz4 package and Python's zlib module).
 */
#include "inflate.h"

#include <limits.h>
#include <lz4.h>

long tr_lz4_decompress(const uint8_t *src, size_t len, uint8_t *dst, size_t cap)
{
    if (!cap)
        return -1;
    if (len > INT_MAX)
        return -1; /* never a packet; liblz4 counts in int */
    int room = cap > INT_MAX ? INT_MAX : (int)cap;
    return LZ4_decompress_safe((const char *)src, (char *)dst, (int)len, room);
}

/* inflate over all of z's input, Z_SYNC_FLUSH, in pieces zlib's 32-bit counts can hold. */
static int inflate_all(z_stream *z, const uint8_t **in, size_t *in_left, uint8_t **out, size_t *out_left)
{
    int status;
    do {
        uInt give_in = *in_left > UINT_MAX ? UINT_MAX : (uInt)*in_left;
        uInt give_out = *out_left > UINT_MAX ? UINT_MAX : (uInt)*out_left;
        z->next_in = (Bytef *)*in, z->avail_in = give_in;
        z->next_out = *out, z->avail_out = give_out;
        status = inflate(z, Z_SYNC_FLUSH);
        *in += give_in - z->avail_in, *in_left -= give_in - z->avail_in;
        *out += give_out - z->avail_out, *out_left -= give_out - z->avail_out;
        if (status != Z_OK && status != Z_BUF_ERROR)
            return status; /* Z_STREAM_END or an error */
        /* inflate stops only when the input is used up or the output is full */
    } while (*out_left && *in_left);
    return status;
}

enum tr_inflate_status tr_cstp_inflate(z_stream *z, uint32_t *adler, const uint8_t *record, size_t len, uint8_t *dst,
                                       size_t cap, size_t *out_len, int *zerr)
{
    if (len < TR_ADLER32_BYTES)
        return TR_INFLATE_NO_ADLER;
    const uint8_t *in = record;
    size_t in_left = len - TR_ADLER32_BYTES, out_left = cap, produced;
    uint8_t *out = dst;
    int status = Z_OK;
    /* The reference asks zlib for at most max(cap, 1) bytes, then, while input is left and
     * it holds no more than cap, for one more byte at a time: one byte past cap is "too big".
     * With cap 0 its first request is already that one-byte probe, even with no input. */
    if (cap) {
        status = inflate_all(z, &in, &in_left, &out, &out_left);
        produced = cap - out_left;
    } else {
        produced = 0;
        in_left = in_left ? in_left : 0;
    }
    if (status != Z_STREAM_END && status != Z_OK && status != Z_BUF_ERROR)
        return *zerr = status, TR_INFLATE_CORRUPT;
    if (status != Z_STREAM_END && (cap == 0 || (!out_left && in_left))) {
        uint8_t probe;
        uint8_t *probe_out = &probe;
        size_t probe_left = 1;
        status = inflate_all(z, &in, &in_left, &probe_out, &probe_left);
        if (status != Z_STREAM_END && status != Z_OK && status != Z_BUF_ERROR)
            return *zerr = status, TR_INFLATE_CORRUPT;
        if (!probe_left)
            return TR_INFLATE_EXCEEDS;
    }
    if (status == Z_STREAM_END)
        return TR_INFLATE_ENDED;
    const uint8_t *tail = record + len - TR_ADLER32_BYTES;
    uint32_t sent = (uint32_t)tail[0] << 24 | (uint32_t)tail[1] << 16 | (uint32_t)tail[2] << 8 | tail[3];
    uint32_t sum = *adler;
    for (size_t done = 0; done < produced;) { /* zlib's adler32 counts in uInt */
        uInt piece = produced - done > UINT_MAX ? UINT_MAX : (uInt)(produced - done);
        sum = (uint32_t)adler32(sum, dst + done, piece);
        done += piece;
    }
    if (sum != sent)
        return TR_INFLATE_ADLER;
    *adler = sum;
    *out_len = produced;
    return TR_INFLATE_OK;
}
